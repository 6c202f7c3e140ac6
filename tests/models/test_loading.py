"""Building models, saving their weights (deterministic bytes, umask permissions), class counts."""

from __future__ import annotations

import os

import pytest
import torch

from deepshrink.errors import ModelError
from deepshrink.models import build_model, load_weights, num_classes, save_weights


def test_saved_weights_are_byte_deterministic_and_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        for name in ("a", "b"):
            torch.manual_seed(0)
            save_weights(build_model("lenet-5"), tmp_path / f"{name}.safetensors",
                         metadata={"model": "lenet-5", "data": "fashion-mnist", "seed": "0", "x": "1"})
    finally:
        os.umask(old)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert a.read_bytes() == b.read_bytes()
    assert a.stat().st_mode & 0o777 == 0o644  # the reference writer leaves 0600
    torch.manual_seed(1)
    model = load_weights(build_model("lenet-5"), a)
    torch.manual_seed(0)
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), build_model("lenet-5").state_dict().values()))


def test_num_classes_from_the_shape_plan(tmp_path):
    import deepshrink as ds

    model = build_model("lenet-300-100", num_classes=7)
    spec = ds.InputSpec((1, 28, 28), "uint8", 1 / 255, (0.5,), (0.5,))
    ds.save_model(model, tmp_path / "m.dsz", spec)
    assert num_classes(ds.load(tmp_path / "m.dsz")) == 7


def test_an_unimportable_factory_says_how_to_fix_it():
    with pytest.raises(ModelError, match="PYTHONPATH"):
        build_model("no_such_module_here:factory")
