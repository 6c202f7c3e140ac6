"""Reading and writing IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is a 4-byte magic number ``00 00 TT NN`` (``TT`` the element type, ``NN`` the number
of dimensions), then ``NN`` big-endian unsigned 32-bit dimension sizes, then the elements in
C order, big-endian. Files may be gzip-compressed; compression is recognised by the gzip magic
bytes ``1f 8b``, never by the file name.

The reader trusts nothing in the header: the payload size the header claims is checked against
the bytes actually present before any large array is allocated, and a gzip stream is never
decompressed beyond the claimed size plus one byte.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from deepshrink.errors import DataError

__all__ = ["read_idx", "write_idx", "IDX_DTYPES"]

#: IDX element-type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_BY_KIND: dict[tuple[str, int], int] = {(dt.kind, dt.itemsize): code for code, dt in IDX_DTYPES.items()}

_GZIP_MAGIC = b"\x1f\x8b"
_MAX_NDIM = 4
_CHUNK = 1 << 20  # bytes decompressed per read: memory grows only with data actually present
_UINT32_MAX = 2**32 - 1


def _type_names() -> str:
    return ", ".join(f"0x{code:02X} ({dt.newbyteorder('=').name})" for code, dt in IDX_DTYPES.items())


def _read_exact(stream, n: int) -> bytes:
    """Read up to ``n`` bytes, looping over short reads; fewer only at end of stream."""
    parts = []
    remaining = n
    while remaining > 0:
        chunk = stream.read(min(remaining, _CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


def _parse_header(stream, name: str, compressed: bool) -> tuple[np.dtype, tuple[int, ...], int]:
    """Parse magic and dimensions; return (dtype, shape, header byte count)."""
    what = "decompressed stream" if compressed else "file"
    magic = _read_exact(stream, 4)
    if len(magic) < 4:
        raise DataError(
            f"{name}: not an IDX file: the {what} has {len(magic)} bytes, expected at least a "
            "4-byte magic number (00 00 <type> <ndim>)"
        )
    if magic[0] != 0 or magic[1] != 0:
        raise DataError(
            f"{name}: not an IDX file: magic number starts with bytes {magic[0]:02x} {magic[1]:02x}, "
            "expected 00 00"
        )
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        raise DataError(
            f"{name}: unsupported IDX element type 0x{code:02X}; expected one of {_type_names()}"
        )
    if not 1 <= ndim <= _MAX_NDIM:
        raise DataError(f"{name}: IDX header claims {ndim} dimensions; expected 1 to {_MAX_NDIM}")
    raw_dims = _read_exact(stream, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(
            f"{name}: truncated IDX header: {ndim} dimensions need {4 * ndim} bytes of sizes after "
            f"the magic number, the {what} has only {len(raw_dims)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw_dims, dtype=">u4"))
    return IDX_DTYPES[code], shape, 4 + 4 * ndim


def _size_error(name: str, shape, dtype: np.dtype, expected: int, actual: str, compressed: bool) -> DataError:
    what = "decompressed payload" if compressed else "payload"
    return DataError(
        f"{name}: IDX header describes shape {shape} of {dtype.newbyteorder('=').name} "
        f"({expected} bytes of data), but the {what} after the header is {actual} bytes"
    )


def _finish(buf: bytearray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    native = dtype.newbyteorder("=")
    if dtype.itemsize == 1 or dtype == native:
        # Wrap the bytearray without copying; the result is writable and owns no shared data.
        return np.frombuffer(buf, dtype=native).reshape(shape)
    return np.frombuffer(buf, dtype=dtype).reshape(shape).astype(native)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a native-byte-order numpy array.

    Raises :class:`~deepshrink.errors.DataError` naming the file if it is missing, is not an IDX
    file, has an unsupported element type or dimension count, or if its payload is shorter or
    longer than the header's dimensions require.
    """
    p = Path(path)
    name = str(p)
    try:
        f = open(p, "rb")
    except FileNotFoundError:
        raise DataError(f"{name}: IDX file not found") from None
    except IsADirectoryError:
        raise DataError(f"{name}: is a directory, expected an IDX file") from None
    except OSError as e:
        raise DataError(f"{name}: cannot open IDX file: {e.strerror or e}") from None
    with f:
        head = f.read(2)
        f.seek(0)
        if head == _GZIP_MAGIC:
            return _read_gz(f, name)
        return _read_raw(f, name)


def _read_raw(f, name: str) -> np.ndarray:
    dtype, shape, header_len = _parse_header(f, name, compressed=False)
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    actual = os.fstat(f.fileno()).st_size - header_len
    if actual != expected:  # checked before allocating anything of the claimed size
        raise _size_error(name, shape, dtype, expected, str(actual), compressed=False)
    buf = bytearray(expected)
    got = f.readinto(buf) if expected else 0
    if got != expected:  # file changed under us
        raise _size_error(name, shape, dtype, expected, str(got), compressed=False)
    return _finish(buf, dtype, shape)


def _read_gz(f, name: str) -> np.ndarray:
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as g:
            dtype, shape, _ = _parse_header(g, name, compressed=True)
            expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
            # Never decompress more than the claimed payload + 1 byte (to detect trailing data),
            # and grow the buffer only with bytes actually decompressed.
            buf = bytearray()
            limit = expected + 1
            while len(buf) < limit:
                chunk = g.read(min(_CHUNK, limit - len(buf)))
                if not chunk:
                    break
                buf += chunk
    except (gzip.BadGzipFile, zlib.error, EOFError) as e:
        raise DataError(f"{name}: corrupt gzip stream: {e}") from None
    if len(buf) > expected:
        raise _size_error(name, shape, dtype, expected, f"at least {len(buf)}", compressed=True)
    if len(buf) < expected:
        raise _size_error(name, shape, dtype, expected, str(len(buf)), compressed=True)
    return _finish(buf, dtype, shape)


def write_idx(path: str | os.PathLike, array) -> None:
    """Write ``array`` as an IDX file; gzip-compressed if ``path`` ends with ``.gz``.

    Supported dtypes: uint8, int8, int16, int32, float32, float64 (other dtypes raise
    :class:`~deepshrink.errors.DataError` rather than being converted silently); 1 to 4
    dimensions, each smaller than 2**32.
    """
    arr = np.asarray(array)
    p = Path(path)
    code = _CODE_BY_KIND.get((arr.dtype.kind, arr.dtype.itemsize))
    if code is None:
        raise DataError(
            f"{p}: cannot write dtype {arr.dtype} to IDX; expected one of "
            "uint8, int8, int16, int32, float32, float64"
        )
    if not 1 <= arr.ndim <= _MAX_NDIM:
        raise DataError(f"{p}: cannot write a {arr.ndim}-D array to IDX; expected 1 to {_MAX_NDIM} dimensions")
    if any(d > _UINT32_MAX for d in arr.shape):
        raise DataError(f"{p}: array shape {arr.shape} has a dimension of 2**32 or more; IDX cannot store it")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes()
    if str(p).endswith(".gz"):
        with open(p, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as g:
            g.write(header)
            g.write(payload)
    else:
        with open(p, "wb") as f:
            f.write(header)
            f.write(payload)
