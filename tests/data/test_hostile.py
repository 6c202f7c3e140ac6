"""Hostile data: .npz headers that lie, absurd labels, huge or non-finite float images."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from deepshrink.data import MAX_CLASSES, Dataset, load_dataset
from deepshrink.errors import DataError


def _arrays(n_train=40, n_test=10):
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": np.arange(n_train) % 3,
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": np.arange(n_test) % 3,
    }


def _npy_bytes(header: dict, payload: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


def _write_npz(path: Path, members: dict[str, bytes], method=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as z:
        for name, data in members.items():
            z.writestr(f"{name}.npy", data)
    return path


def _members(arrays: dict) -> dict[str, bytes]:
    out = {}
    for k, a in arrays.items():
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=False)
        out[k] = buf.getvalue()
    return out


def _load_bounded(path: Path, **kwargs):
    """load_dataset under tracemalloc: returns (exception, peak bytes allocated)."""
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as e:
            load_dataset(path, val_size=5, **kwargs)
        return e.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npy_header_claiming_10_to_the_12_elements_is_refused_before_allocating(tmp_path, method):
    members = _members(_arrays())
    members["x_train"] = _npy_bytes({"descr": "|u1", "fortran_order": False, "shape": (10**12,)}, b"\0" * 64)
    err, peak = _load_bounded(_write_npz(tmp_path / "bomb.npz", members, method))
    assert "x_train" in str(err) and "1000000000000" in str(err)
    assert peak < 32 << 20


def _patch_central_size(data: bytes, name: bytes, size: int) -> bytes:
    """Rewrite the uncompressed size the zip's central directory records for member ``name``."""
    at = data.index(b"PK\x01\x02")  # the first central-directory entry
    while True:
        n_len, = struct.unpack("<H", data[at + 28 : at + 30])
        if data[at + 46 : at + 46 + n_len] == name:
            return data[: at + 24] + struct.pack("<I", size) + data[at + 28 :]
        at = data.index(b"PK\x01\x02", at + 4)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zip_directory_and_npy_header_agreeing_on_a_size_the_archive_cannot_hold(tmp_path, method):
    claimed = 0xF000_0000  # ~4 GB, consistent between the .npy header and the zip directory
    hlen = len(_npy_bytes({"descr": "|u1", "fortran_order": False, "shape": (claimed,)}, b""))
    members = _members(_arrays())
    members["x_train"] = _npy_bytes({"descr": "|u1", "fortran_order": False, "shape": (claimed - hlen,)}, b"\0" * 100)
    path = _write_npz(tmp_path / "liar.npz", members, method)
    path.write_bytes(_patch_central_size(path.read_bytes(), b"x_train.npy", claimed))
    err, peak = _load_bounded(path)
    assert "x_train" in str(err) and "cannot hold" in str(err)
    assert peak < 32 << 20


def test_pickled_and_non_npy_members_are_data_errors(tmp_path):
    members = _members(_arrays())
    members["y_test"] = _npy_bytes({"descr": "|O", "fortran_order": False, "shape": (10,)}, b"\x80\x04N.")
    with pytest.raises(DataError, match=r"y_test.*no pickles"):
        load_dataset(_write_npz(tmp_path / "pickle.npz", members), val_size=5)
    members = _members(_arrays())
    members["x_test"] = b"just some bytes, not an array"
    with pytest.raises(DataError, match="x_test"):
        load_dataset(_write_npz(tmp_path / "raw.npz", members), val_size=5)


def test_npz_written_by_numpy_still_loads_including_fortran_order_and_compression(tmp_path):
    a = _arrays()
    a["x_train"] = np.asfortranarray(a["x_train"])
    np.savez_compressed(tmp_path / "ok.npz", **a)
    data = load_dataset(tmp_path / "ok.npz", val_size=0)
    assert np.array_equal(data.x_train[:, 0], a["x_train"])
    assert data.y_test.tolist() == a["y_test"].tolist()


@pytest.mark.parametrize("label", [10**6, 2**40, np.iinfo(np.uint64).max])
def test_absurd_labels_are_refused_with_the_class_bound(tmp_path, label):
    a = _arrays()
    dtype = np.uint64 if label > np.iinfo(np.int64).max else np.int64
    a["y_train"] = a["y_train"].astype(dtype)
    a["y_train"][7] = label
    np.savez(tmp_path / "labels.npz", **a)
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path / "labels.npz", val_size=5)
    msg = str(e.value)
    assert "y_train" in msg and f"{MAX_CLASSES:,}" in msg and "MAX_CLASSES" in msg


def test_the_class_bound_itself_is_allowed(tmp_path):
    a = _arrays()
    a["y_train"][3] = MAX_CLASSES - 1
    np.savez(tmp_path / "many.npz", **a)
    assert load_dataset(tmp_path / "many.npz", val_size=5).num_classes == MAX_CLASSES


def test_dataset_constructor_bounds_num_classes(tmp_path):
    np.savez(tmp_path / "ok.npz", **_arrays())
    d = load_dataset(tmp_path / "ok.npz", val_size=5)
    with pytest.raises(DataError, match="MAX_CLASSES"):
        Dataset("x", d.x_train, d.y_train, d.x_val, d.y_val, d.x_test, d.y_test, MAX_CLASSES + 1, d.input_spec)


@pytest.mark.parametrize("value, needle", [(1e300, "magnitudes up to"), (-1e30, "magnitudes up to"),
                                           (np.inf, "infinite"), (np.nan, "NaN")])
def test_float_images_out_of_range_are_refused_naming_the_array(tmp_path, value, needle):
    a = _arrays()
    x = a["x_test"].astype(np.float64) / 255
    x[2, 3, 4] = value
    np.savez(tmp_path / "floats.npz", **{**a, "x_train": a["x_train"] / 255, "x_test": x})
    with np.errstate(all="raise"):  # no overflow warning on the way to the error
        with pytest.raises(DataError, match=needle) as e:
            load_dataset(tmp_path / "floats.npz", val_size=5)
    assert "x_test" in str(e.value)
