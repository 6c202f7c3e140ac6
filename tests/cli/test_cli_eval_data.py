"""``eval`` scores a file on the data set it was compressed on, or refuses (issue 7, silent wrong
answer 1: a model compressed on MNIST-like digits was scored on Fashion-MNIST, exit 0)."""

from __future__ import annotations

import shutil

import pytest

import deepshrink as ds
from deepshrink.cli import main


@pytest.fixture(scope="module")
def digits(tmp_path_factory, fast_recipe, npz):
    """A LeNet-300-100 compressed on a small MNIST-like .npz: (data path, file, compress output)."""
    d = tmp_path_factory.mktemp("digits")
    data = npz(d / "digits.npz")
    w = d / "w.safetensors"
    quiet = ["--no-progress", "--json"]
    assert main(["train", "--model", "lenet-300-100", "--data", str(data), "--epochs", "2", "-o", str(w), *quiet]) == 0
    dsz = d / "digits.dsz"
    assert main(["compress", "--model", "lenet-300-100", "--weights", str(w), "--data", str(data),
                 "--recipe", str(fast_recipe), "-o", str(dsz), *quiet]) == 0
    return data, dsz, ds.load(dsz)


def test_eval_without_data_uses_the_data_recorded_in_the_file(digits, cli):
    data, dsz, model = digits
    assert model.meta["data"] == str(data.resolve())
    code, out = cli("eval", str(dsz))
    assert code == 0, out
    assert out["data"] == str(data.resolve()) and out["data_source"] == "recorded in the file"
    assert out["accuracy"] > 0.9 and out["samples"] == 200  # the digits' test split, not Fashion-MNIST's
    assert out["warnings"] == []


def test_eval_refuses_data_with_other_classes_or_shapes(digits, cli, tmp_path, npz):
    _, dsz, _ = digits
    three = npz(tmp_path / "three.npz", classes=3)
    code, out = cli("eval", str(dsz), "--data", str(three))
    assert code == 2 and out["type"] == "DataError" and "3 classes" in out["error"] and "10 class scores" in out["error"]
    small = npz(tmp_path / "small.npz", side=14)
    code, out = cli("eval", str(dsz), "--data", str(small))
    assert code == 2 and "shape [1, 14, 14]" in out["error"] and "[1, 28, 28]" in out["error"]


def test_eval_refuses_when_the_recorded_data_is_not_here(digits, cli, tmp_path):
    data, dsz, _ = digits
    moved = tmp_path / "digits.dsz"
    shutil.copy(dsz, moved)
    hidden = data.with_suffix(".hidden")
    data.rename(hidden)
    try:
        code, out = cli("eval", str(moved))
    finally:
        hidden.rename(data)
    assert code == 2 and "does not exist here" in out["error"] and "--data" in out["error"]


def test_eval_refuses_a_file_that_records_no_data(cli, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent / "fileformat"))
    from test_model_file import SPEC, tiny_compressed_model

    for i, meta in enumerate([None, {"data": ["fashion-mnist"]}, {"data": 7}]):  # absent, or not a string
        path = tmp_path / f"bare{i}.dsz"
        ds.save_model(tiny_compressed_model(), path, SPEC, meta=meta)
        code, out = cli("eval", str(path))
        assert code == 2 and "does not record the data set" in out["error"]
    ds.save_model(tiny_compressed_model(), path, SPEC, meta={"data": "x\0y"})  # not even a path
    code, out = cli("eval", str(path))
    assert code == 2 and "does not exist here" in out["error"]


def test_eval_warns_when_the_pixel_statistics_differ(digits, cli, tmp_path, npz):
    _, dsz, _ = digits
    bright = npz(tmp_path / "bright.npz", background=250, seed=1)  # same classes and shape
    code, out = cli("eval", str(dsz), "--data", str(bright))
    assert code == 0 and len(out["warnings"]) == 1 and "pixel statistics" in out["warnings"][0]


def test_eval_test_split_works_on_a_tiny_training_set(digits, cli, tmp_path, npz):
    _, dsz, _ = digits
    tiny = npz(tmp_path / "tiny.npz", n_train=10, n_test=50)
    code, out = cli("eval", str(dsz), "--data", str(tiny), "--split", "test")
    assert code == 0 and out["samples"] == 50
    code, out = cli("eval", str(dsz), "--data", str(tiny), "--split", "val", "--val-size", "0")
    assert code == 2 and "empty" in out["error"]
