"""load_dataset and Dataset: named lookup, IDX folders, npz layouts, validation, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deepshrink.data import Dataset, InputSpec, load_dataset, write_idx
from deepshrink.errors import ConfigError, DataError

FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def tagged_images(n: int, h: int = 28, w: int = 28, offset: int = 0) -> np.ndarray:
    """uint8 images whose first two pixels encode the sample index (for identity checks)."""
    rng = np.random.default_rng(n + offset)
    x = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
    idx = np.arange(n) + offset
    x[:, 0, 0] = idx % 256
    x[:, 0, 1] = idx // 256
    return x


def ident(x: np.ndarray) -> np.ndarray:
    return x[:, 0, 0, 0].astype(int) + 256 * x[:, 0, 0, 1].astype(int)


def arrays(n_train=60, n_test=20, classes=3):
    return {
        "x_train": tagged_images(n_train),
        "y_train": (np.arange(n_train) % classes).astype(np.uint8),
        "x_test": tagged_images(n_test, offset=1000),
        "y_test": (np.arange(n_test) % classes).astype(np.uint8),
    }


def write_idx_dir(folder: Path, data: dict, *, gz=True, dotted=False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for key, base in IDX_NAMES.items():
        name = base.replace("-idx", ".idx", 1) if dotted else base
        write_idx(folder / (name + (".gz" if gz else "")), data[key])
    return folder


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("DEEPSHRINK_DATA", raising=False)


# ---------------------------------------------------------------- named datasets and folders


def test_named_lookup_through_env(tmp_path, monkeypatch):
    data = arrays()
    write_idx_dir(tmp_path / "fashion-mnist", data)
    monkeypatch.setenv("DEEPSHRINK_DATA", str(tmp_path))
    ds = load_dataset("fashion-mnist", val_size=10)
    assert ds.name == "fashion-mnist"
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (50, 10, 20)
    assert ds.x_train.shape == (50, 1, 28, 28) and ds.x_train.dtype == np.uint8
    assert ds.y_train.dtype == np.int64 and ds.num_classes == 3
    assert np.array_equal(ds.x_test[:, 0], data["x_test"])
    assert ds.input_spec.shape == (1, 28, 28) and ds.input_spec.dtype == "uint8"
    assert ds.input_spec.scale == pytest.approx(1 / 255)


def test_data_dir_argument_overrides_env(tmp_path, monkeypatch):
    write_idx_dir(tmp_path / "a" / "mnist", arrays(n_train=30))
    write_idx_dir(tmp_path / "b" / "mnist", arrays(n_train=40))
    monkeypatch.setenv("DEEPSHRINK_DATA", str(tmp_path / "a"))
    assert len(load_dataset("mnist", val_size=5).y_train) == 25
    assert len(load_dataset("mnist", val_size=5, data_dir=tmp_path / "b").y_train) == 35


def test_missing_named_folder_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSHRINK_DATA", str(tmp_path))
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist")
    msg = str(e.value)
    assert str(tmp_path / "fashion-mnist") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "DEEPSHRINK_DATA" in msg
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(tmp_path / "mnist") in str(e.value) and "DEEPSHRINK_DATA" in str(e.value)


def test_missing_single_file_is_named(tmp_path, monkeypatch):
    folder = write_idx_dir(tmp_path / "fashion-mnist", arrays())
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("DEEPSHRINK_DATA", str(tmp_path))
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", val_size=5)
    msg = str(e.value)
    assert str(folder) in msg and "t10k-labels-idx1-ubyte" in msg and "apt-get install" in msg


@pytest.mark.parametrize("gz, dotted", [(False, False), (True, True), (False, True)])
def test_directory_path_variants(tmp_path, gz, dotted):
    folder = write_idx_dir(tmp_path / "mydata", arrays(), gz=gz, dotted=dotted)
    ds = load_dataset(folder, val_size=0)
    assert ds.name == "mydata"
    assert len(ds.y_train) == 60 and len(ds.y_val) == 0 and ds.x_val.shape == (0, 1, 28, 28)
    assert np.array_equal(ident(ds.x_train), np.arange(60))


def test_corrupt_idx_in_folder_names_file(tmp_path):
    folder = write_idx_dir(tmp_path / "d", arrays())
    p = folder / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_dataset(folder, val_size=5)


def test_unknown_name_lists_accepted_forms(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar-10")
    msg = str(e.value)
    assert "cifar-10" in msg and "fashion-mnist" in msg and ".npz" in msg and "directory" in msg
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(DataError, match=".npz"):
        load_dataset(tmp_path / "data.csv")


def test_real_fashion_mnist_default_location():
    if not FASHION.is_dir():
        pytest.skip(f"{FASHION} absent (apt-get install dataset-fashion-mnist)")
    ds = load_dataset("fashion-mnist", val_size=5000)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (55000, 5000, 10000)
    assert ds.x_train.shape[1:] == (1, 28, 28) and ds.input_spec.shape == (1, 28, 28)
    assert ds.num_classes == 10
    assert ds.input_spec.mean[0] == pytest.approx(0.286, abs=0.002)
    assert ds.input_spec.std[0] == pytest.approx(0.353, abs=0.002)
    x, y = ds.tensors("val")
    assert x.shape == (5000, 1, 28, 28) and y.dtype == torch.int64
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05


# ---------------------------------------------------------------- npz layouts


def save_npz(path: Path, **arrs) -> Path:
    np.savez(path, **arrs)
    return path


def test_npz_uint8_n28x28(tmp_path):
    d = arrays()
    ds = load_dataset(save_npz(tmp_path / "digits.npz", **d), val_size=0.25, seed=3)
    assert ds.name == "digits"
    assert (len(ds.y_train), len(ds.y_val)) == (45, 15)
    assert ds.x_train.shape == (45, 1, 28, 28) and ds.x_train.dtype == np.uint8
    # mean/std come from the training split only (not val), after scaling, rounded to 4 decimals
    train = ds.x_train.astype(np.float64) / 255
    assert ds.input_spec.mean == (round(train.mean(), 4),)
    assert ds.input_spec.std == (round(train.std(), 4),)
    assert np.array_equal(np.sort(np.concatenate([ident(ds.x_train), ident(ds.x_val)])), np.arange(60))


def test_npz_n1x28x28_and_n784_float(tmp_path):
    d = arrays()
    four = {**d, "x_train": d["x_train"][:, None], "x_test": d["x_test"][:, None]}
    ds4 = load_dataset(save_npz(tmp_path / "four.npz", **four), val_size=5)
    assert ds4.x_train.shape == (55, 1, 28, 28)

    flt = {**d, "x_train": d["x_train"].reshape(60, 784) / 255.0, "x_test": d["x_test"].reshape(20, 784) / 255.0}
    assert flt["x_train"].dtype == np.float64
    ds = load_dataset(save_npz(tmp_path / "flat.npz", **flt), val_size=5)
    assert ds.x_train.shape == (55, 1, 28, 28) and ds.x_train.dtype == np.float32
    assert ds.input_spec.dtype == "float32" and ds.input_spec.scale == 1.0
    assert ds.input_spec.mean == pytest.approx(ds4.input_spec.mean, abs=1e-4)
    assert ds.input_spec.std == pytest.approx(ds4.input_spec.std, abs=1e-4)
    np.testing.assert_allclose(ds.tensors("train")[0].numpy(), ds4.tensors("train")[0].numpy(), atol=1e-4)


def test_npz_flat_non_square_and_multichannel(tmp_path):
    rng = np.random.default_rng(0)
    flat = {"x_train": rng.random((30, 10)), "y_train": np.arange(30) % 2,
            "x_test": rng.random((5, 10)), "y_test": np.arange(5) % 2}
    ds = load_dataset(save_npz(tmp_path / "flat10.npz", **flat), val_size=3)
    assert ds.x_train.shape == (27, 10) and ds.input_spec.shape == (10,)
    assert len(ds.input_spec.mean) == 1
    assert ds.tensors("test")[0].shape == (5, 10)

    x = rng.integers(0, 256, size=(40, 3, 8, 8), dtype=np.uint8)
    x[:, 1] = 7  # constant channel: std falls back to 1.0
    rgb = {"x_train": x, "y_train": np.arange(40) % 4,
           "x_test": x[:6], "y_test": np.arange(6) % 4}
    ds = load_dataset(save_npz(tmp_path / "rgb.npz", **rgb), val_size=0)
    assert ds.input_spec.shape == (3, 8, 8) and len(ds.input_spec.mean) == 3
    assert ds.input_spec.mean[0] == pytest.approx(x[:, 0].mean() / 255, abs=1e-4)
    assert ds.input_spec.mean[1] == pytest.approx(7 / 255, abs=1e-4) and ds.input_spec.std[1] == 1.0
    assert ds.num_classes == 4


def test_npz_missing_keys_lists_found_and_expected(tmp_path):
    d = arrays()
    p = save_npz(tmp_path / "partial.npz", x_train=d["x_train"], y_train=d["y_train"], images=d["x_test"])
    with pytest.raises(DataError) as e:
        load_dataset(p)
    msg = str(e.value)
    assert "partial.npz" in msg and "images" in msg and "x_test" in msg and "y_test" in msg


def test_npz_garbage_and_single_array(tmp_path):
    p = tmp_path / "garbage.npz"
    p.write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(DataError, match="garbage.npz"):
        load_dataset(p)
    q = tmp_path / "single.npz"
    with open(q, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError, match="single.npz"):
        load_dataset(q)


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda d: {**d, "y_train": d["y_train"][:-1]}, "60 images but 59 labels"),
        (lambda d: {**d, "y_test": np.concatenate([d["y_test"], [0]])}, "20 images but 21 labels"),
        (lambda d: {**d, "y_train": d["y_train"].reshape(-1, 1)}, "1-D"),
        (lambda d: {**d, "y_train": d["y_train"].astype(np.float32)}, "integers"),
        (lambda d: {**d, "y_train": d["y_train"].astype(np.int64) - 1}, ">= 0"),
        (lambda d: {**d, "y_train": np.zeros(60, np.uint8)}, "at least 2 classes"),
        (lambda d: {**d, "y_test": np.full(20, 3, np.uint8)}, "expected [0, 3)"),
        (lambda d: {**d, "x_test": d["x_test"][:, :27]}, "per-sample shape"),
        (lambda d: {**d, "x_test": d["x_test"].astype(np.float32)}, "same dtype"),
        (lambda d: {**d, "x_train": d["x_train"].astype(np.int64)}, "dtype int64"),
        (lambda d: {**d, "x_train": np.full((60, 28, 28), np.nan)}, "NaN"),
        (lambda d: {**d, "x_train": d["x_train"].reshape(60, 28, 28, 1, 1)}, "shape"),
        (lambda d: {**d, "x_test": d["x_test"][:0], "y_test": d["y_test"][:0]}, "empty"),
    ],
)
def test_validation_errors(tmp_path, change, needle):
    p = save_npz(tmp_path / "bad.npz", **change(arrays()))
    with pytest.raises(DataError) as e:
        load_dataset(p, val_size=5)
    assert needle in str(e.value)
    assert "bad" in str(e.value)


# ---------------------------------------------------------------- validation split


def test_split_deterministic_disjoint_and_test_untouched(tmp_path):
    d = arrays(n_train=200, n_test=30)
    p = save_npz(tmp_path / "s.npz", **d)
    a = load_dataset(p, val_size=40, seed=7)
    b = load_dataset(p, val_size=40, seed=7)
    c = load_dataset(p, val_size=40, seed=8)
    assert np.array_equal(a.x_val, b.x_val) and np.array_equal(a.y_train, b.y_train)
    ta, va = set(ident(a.x_train)), set(ident(a.x_val))
    assert len(ta) == 160 and len(va) == 40 and not ta & va and ta | va == set(range(200))
    assert va != set(ident(c.x_val))
    expected_val = set(np.random.default_rng(7).permutation(200)[:40].tolist())
    assert va == expected_val
    assert np.array_equal(a.y_val, d["y_train"][sorted(expected_val)])
    assert np.array_equal(a.x_test[:, 0], d["x_test"]) and np.array_equal(a.y_test, d["y_test"])


@pytest.mark.filterwarnings("ignore::deepshrink.data.SplitWarning")  # 59 and 0.5 take over a quarter
@pytest.mark.parametrize("val_size, n_val", [(0, 0), (1, 1), (59, 59), (0.5, 30), (0.001, 1)])
def test_val_size_forms(tmp_path, val_size, n_val):
    ds = load_dataset(save_npz(tmp_path / "v.npz", **arrays()), val_size=val_size)
    assert len(ds.y_val) == n_val and len(ds.y_train) == 60 - n_val


@pytest.mark.parametrize("val_size", [60, 5000, -1, 0.0, 1.0, 1.5, True, "10", None])
def test_bad_val_size(tmp_path, val_size):
    p = save_npz(tmp_path / "v.npz", **arrays())
    with pytest.raises(ConfigError):
        load_dataset(p, val_size=val_size)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed(tmp_path, seed):
    with pytest.raises(ConfigError):
        load_dataset(save_npz(tmp_path / "v.npz", **arrays()), seed=seed)


# ---------------------------------------------------------------- Dataset methods


@pytest.fixture
def small(tmp_path) -> Dataset:
    return load_dataset(save_npz(tmp_path / "small.npz", **arrays(n_train=100, n_test=40)), val_size=20)


def test_subset_sizes_determinism_and_membership(small):
    s1 = small.subset(10, 5, 8, seed=1)
    s2 = small.subset(10, 5, 8, seed=1)
    s3 = small.subset(10, 5, 8, seed=2)
    assert (len(s1.y_train), len(s1.y_val), len(s1.y_test)) == (10, 5, 8)
    assert np.array_equal(s1.x_train, s2.x_train) and np.array_equal(s1.y_test, s2.y_test)
    assert not np.array_equal(ident(s1.x_train), ident(s3.x_train))
    assert set(ident(s1.x_train)) <= set(ident(small.x_train))
    assert len(set(ident(s1.x_train))) == 10
    # a split's draw does not depend on the other splits' sizes
    assert np.array_equal(small.subset(10, seed=1).x_train, s1.x_train)
    keep = small.subset(10)
    assert len(keep.y_val) == 20 and len(keep.y_test) == 40
    assert s1.num_classes == small.num_classes and s1.input_spec == small.input_spec
    assert len(small.y_train) == 80  # original untouched


@pytest.mark.parametrize("args", [(0,), (81,), (10, 21), (10, None, 41), (10, -1), (2.5,)])
def test_subset_rejects_bad_sizes(small, args):
    with pytest.raises(ConfigError):
        small.subset(*args)


def test_tensors(small):
    x, y = small.tensors("train")
    assert x.dtype == torch.float32 and tuple(x.shape) == (80, 1, 28, 28)
    assert y.dtype == torch.int64 and y.tolist() == small.y_train.tolist()
    assert torch.equal(x, small.input_spec.apply(small.x_train))
    assert small.tensors("test")[0].shape[0] == 40
    with pytest.raises(DataError, match="'validation'"):
        small.tensors("validation")
    assert "small" in repr(small) and "train=80" in repr(small)


def test_dataset_constructor_validates(small):
    spec = small.input_spec
    with pytest.raises(DataError, match="labels"):
        Dataset("x", small.x_train, small.y_train[:-1], small.x_val, small.y_val, small.x_test, small.y_test, 3, spec)
    with pytest.raises(DataError, match="shape"):
        Dataset("x", small.x_train[:, 0], small.y_train, small.x_val, small.y_val, small.x_test, small.y_test, 3, spec)
    with pytest.raises(DataError, match="num_classes"):
        Dataset("x", small.x_train, small.y_train, small.x_val, small.y_val, small.x_test, small.y_test, 1, spec)
    with pytest.raises(DataError, match=r"\[0, 2\)"):
        Dataset("x", small.x_train, small.y_train, small.x_val, small.y_val, small.x_test, small.y_test, 2, spec)
    f_spec = InputSpec(shape=(1, 28, 28), dtype="float32", scale=1.0, mean=(0.0,), std=(1.0,))
    with pytest.raises(DataError, match="dtype"):
        Dataset("x", small.x_train, small.y_train, small.x_val, small.y_val, small.x_test, small.y_test, 3, f_spec)
    ok = Dataset("x", small.x_train, small.y_train, small.x_val, small.y_val, small.x_test, small.y_test, 3, spec)
    assert ok.num_classes == 3
