"""IDX reading and writing: round trips, malformed files, hostile headers."""

from __future__ import annotations

import gzip
import struct
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from deepshrink.data import read_idx, write_idx
from deepshrink.data.idx import IDX_DTYPES
from deepshrink.errors import DataError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def write_bytes(path, data: bytes, gz: bool = False):
    if gz:
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-exact equality (NaN and -0.0 included)."""
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gz", [False, True])
def test_round_trip_each_dtype(tmp_path, dtype, gz):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(p, a)
    raw = p.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == gz
    b = read_idx(p)
    assert same(a, b)
    assert b.dtype.isnative and b.flags.writeable


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    a=hnp.arrays(
        dtype=st.sampled_from(DTYPES),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
    ),
    gz=st.booleans(),
)
def test_round_trip_property(tmp_path_factory, a, gz):
    p = tmp_path_factory.mktemp("idx") / ("x.gz" if gz else "x.idx")
    write_idx(p, a)
    assert same(a, read_idx(p))


def test_gzip_detected_by_magic_not_extension(tmp_path):
    a = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    gz_named_plain = tmp_path / "compressed.idx"
    write_idx(tmp_path / "tmp.gz", a)
    gz_named_plain.write_bytes((tmp_path / "tmp.gz").read_bytes())
    plain_named_gz = tmp_path / "plain.gz.bak.gz"
    write_idx(tmp_path / "tmp.idx", a)
    plain_named_gz.write_bytes((tmp_path / "tmp.idx").read_bytes())
    assert gz_named_plain.read_bytes()[:2] == b"\x1f\x8b"
    assert same(read_idx(gz_named_plain), a)
    assert same(read_idx(plain_named_gz), a)


def test_known_header_bytes(tmp_path):
    p = tmp_path / "labels"
    write_idx(p, np.array([1, 2, 3], dtype=np.uint8))
    assert p.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])
    p2 = tmp_path / "f"
    write_idx(p2, np.array([1.5], dtype=np.float32))
    assert p2.read_bytes() == bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + struct.pack(">f", 1.5)


def test_write_idx_gz_is_deterministic(tmp_path):
    a = np.arange(100, dtype=np.uint8)
    write_idx(tmp_path / "a.gz", a)
    write_idx(tmp_path / "b.gz", a)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


@pytest.mark.parametrize(
    "array",
    [np.zeros(3, dtype=np.int64), np.zeros(3, dtype=bool), np.zeros(3, dtype=np.uint16), np.float32(1.0),
     np.zeros((1, 1, 1, 1, 1), dtype=np.uint8)],
    ids=["int64", "bool", "uint16", "0-d", "5-d"],
)
def test_write_idx_rejects_unsupported(tmp_path, array):
    p = tmp_path / "bad.idx"
    with pytest.raises(DataError, match="bad.idx"):
        write_idx(p, array)


# ---------------------------------------------------------------- malformed files


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_payload(tmp_path, gz):
    p = write_bytes(tmp_path / "short-file", header(0x08, (2, 3)) + bytes(5), gz=gz)
    with pytest.raises(DataError) as e:
        read_idx(p)
    msg = str(e.value)
    assert "short-file" in msg and "6 bytes" in msg and "5 bytes" in msg


@pytest.mark.parametrize("gz", [False, True])
def test_trailing_bytes(tmp_path, gz):
    p = write_bytes(tmp_path / "long-file", header(0x0B, (2,)) + bytes(4 + 3), gz=gz)
    with pytest.raises(DataError) as e:
        read_idx(p)
    msg = str(e.value)
    assert "long-file" in msg and "4 bytes" in msg
    # raw files report the exact count; gz streams are never decompressed past claim + 1
    assert ("7 bytes" in msg) if not gz else ("at least 5 bytes" in msg)


def test_truncated_gzip_stream(tmp_path):
    data = gzip.compress(header(0x08, (1000,)) + np.random.default_rng(0).bytes(1000))
    p = tmp_path / "cut.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.gz"):
        read_idx(p)


def test_corrupt_gzip_stream(tmp_path):
    data = bytearray(gzip.compress(header(0x08, (1000,)) + bytes(1000)))
    data[-8] ^= 0xFF  # break the CRC
    p = tmp_path / "crc.gz"
    p.write_bytes(bytes(data))
    with pytest.raises(DataError, match="crc.gz"):
        read_idx(p)


@pytest.mark.parametrize(
    "blob, needle",
    [
        (bytes([1, 0, 8, 1, 0, 0, 0, 1, 7]), "00 00"),
        (bytes([0, 1, 8, 1, 0, 0, 0, 1, 7]), "00 00"),
        (bytes([0, 0, 7, 1, 0, 0, 0, 1, 7]), "element type 0x07"),
        (bytes([0, 0, 8, 0]), "0 dimensions"),
        (bytes([0, 0, 8, 5]) + bytes(20), "5 dimensions"),
        (bytes([0, 0, 8, 3, 0, 0, 0, 1]), "truncated IDX header"),
        (bytes([0, 0]), "not an IDX file"),
        (b"", "not an IDX file"),
    ],
    ids=["magic0", "magic1", "dtype", "ndim0", "ndim5", "short-dims", "short-magic", "empty"],
)
@pytest.mark.parametrize("gz", [False, True])
def test_bad_headers(tmp_path, blob, needle, gz):
    p = write_bytes(tmp_path / "weird-header.idx", blob, gz=gz)
    with pytest.raises(DataError) as e:
        read_idx(p)
    assert "weird-header.idx" in str(e.value)
    assert needle in str(e.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="nope.idx"):
        read_idx(tmp_path / "nope.idx")
    with pytest.raises(DataError, match="directory"):
        read_idx(tmp_path)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("code, dims", [(0x08, (1000, 1000, 1000)), (0x0E, (1000, 1000, 1000)),
                                        (0x0C, (65535, 65535, 65535, 65535))])
def test_huge_claim_fails_fast_without_allocating(tmp_path, gz, code, dims):
    p = write_bytes(tmp_path / "liar.idx", header(code, dims) + bytes(100), gz=gz)
    assert p.stat().st_size < 200
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(DataError) as e:
            read_idx(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 1.0
    assert peak < 8 * 2**20, f"peak allocation {peak} bytes"
    assert "liar.idx" in str(e.value) and "100 bytes" in str(e.value)


def test_every_declared_dtype_code_reads(tmp_path):
    for code, dt in IDX_DTYPES.items():
        values = np.array([0, 1, 2], dtype=dt)
        p = write_bytes(tmp_path / f"c{code}", header(code, (3,)) + values.tobytes())
        out = read_idx(p)
        assert out.dtype == dt.newbyteorder("=")
        assert out.tolist() == [0, 1, 2]


def test_real_fashion_mnist_labels_if_installed():
    from pathlib import Path

    p = Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
    if not p.is_file():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    y = read_idx(p)
    assert y.shape == (10000,) and y.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10
