"""Fixed-length bit packing.

Layout: ``n`` symbols of ``bits`` bits each, concatenated MSB-first (the first symbol's most
significant bit is the most significant bit of byte 0), zero-padded to a whole byte. The
payload is exactly ``ceil(n * bits / 8)`` bytes and carries no header: the reader must know
``bits`` and ``count``. The padding bits must be zero when decoding.
"""

from __future__ import annotations

import numpy as np

from deepshrink.coding._util import as_buffer, as_int, as_symbols, check_count
from deepshrink.errors import ConfigError, CorruptStream

__all__ = ["pack_bits", "unpack_bits"]

# Symbols processed per vectorised chunk (a multiple of 8, so every chunk is byte aligned);
# bounds the temporary (chunk x 32) bit matrix to 32 MiB.
_CHUNK = 1 << 20


def _check_bits(bits: object) -> int:
    b = as_int(bits, "bits")
    if not 1 <= b <= 32:
        raise ConfigError(f"bits must be in 1..32, got {b}")
    return b


def pack_bits(symbols: np.ndarray, bits: int) -> bytes:
    """Pack every symbol into ``bits`` bits (1..32), MSB-first; ``ceil(n*bits/8)`` bytes."""
    b = _check_bits(bits)
    arr = as_symbols(symbols)
    if arr.size == 0:
        return b""
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= (1 << b):
        bad = lo if lo < 0 else hi
        raise ConfigError(f"symbols must lie in [0, 2**{b}) for {b}-bit packing, found {bad}")
    parts = []
    for s in range(0, arr.size, _CHUNK):
        chunk = arr[s : s + _CHUNK].astype(">u4")
        bitmat = np.unpackbits(chunk.view(np.uint8).reshape(-1, 4), axis=1)
        parts.append(np.packbits(bitmat[:, 32 - b :].ravel()).tobytes())
    return b"".join(parts)


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` symbols of ``bits`` bits as an int64 array.

    Raises :class:`CorruptStream` if ``data`` is not exactly ``ceil(count*bits/8)`` bytes or
    its padding bits are not zero.
    """
    b = _check_bits(bits)
    n = check_count(count)
    buf = as_buffer(data)
    need = (n * b + 7) // 8
    if len(buf) < need:
        raise CorruptStream(
            f"fixed {b}-bit stream of {n} symbols needs {need} bytes, got only {len(buf)}"
        )
    if len(buf) > need:
        raise CorruptStream(
            f"fixed {b}-bit stream of {n} symbols needs {need} bytes, got {len(buf)} "
            "(trailing bytes)"
        )
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    raw = np.frombuffer(buf, dtype=np.uint8)
    pad = need * 8 - n * b
    if pad and int(raw[-1]) & ((1 << pad) - 1):
        raise CorruptStream("fixed-length stream has nonzero padding bits")
    out = np.empty(n, dtype=np.int64)
    for s in range(0, n, _CHUNK):
        m = min(_CHUNK, n - s)
        byte0 = s * b // 8  # exact: s is a multiple of 8
        nb = (m * b + 7) // 8
        bitvec = np.unpackbits(raw[byte0 : byte0 + nb], count=m * b).reshape(m, b)
        full = np.zeros((m, 32), dtype=np.uint8)
        full[:, 32 - b :] = bitvec
        out[s : s + m] = np.packbits(full, axis=1).view(">u4").ravel()
    return out
