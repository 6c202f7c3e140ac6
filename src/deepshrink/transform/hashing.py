"""The hash of HashedNets (Chen et al. 2015): which bucket, and with which sign, each weight takes.

``weight[i] = ξ(i) · buckets[h(i)]`` with ``h`` and the sign ``ξ`` fixed functions of the layer's
seed and the flat index ``i``; only the buckets and the seed are stored. Both come from one
64-bit hash, the splitmix64 finaliser (Steele et al. 2014) of ``i + (seed + 1) · φ`` (φ =
0x9E3779B97F4A7C15, the golden-ratio increment) in wrapping uint64 arithmetic, which every
platform computes identically: ``h(i)`` is the hash modulo the bucket count, and ``ξ(i)`` its top
bit (-1 when set). The paper uses two independent hash functions; the top bit and the residue
are independent enough for any bucket count far below 2^63 (and exactly so for powers of two).

Training (the stage's parametrization) and loading call the same :func:`bucket_signs`; loading
computes it in chunks of :data:`CHUNK` indices, so its memory stays bounded on the largest
tensor a file may hold.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

#: Indices hashed at a time (a few MB of uint64 temporaries).
CHUNK = 1 << 18
#: Largest seed a file may store (32 bits: a JSON number every reader keeps exactly).
MAX_SEED = (1 << 32) - 1

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def bucket_signs(seed: int, start: int, count: int, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Bucket (int64, in ``[0, buckets)``) and sign (float32, ±1) of the flat indices
    ``start .. start + count - 1`` of a tensor hashed with ``seed``."""
    with np.errstate(over="ignore"):
        key = np.uint64((seed + 1) & 0xFFFFFFFFFFFFFFFF) * _GOLDEN
        z = mix64(np.arange(start, start + count, dtype=np.uint64) + key)
    index = (z % np.uint64(buckets)).astype(np.int64)
    sign = np.where(z >> np.uint64(63), np.float32(-1), np.float32(1)).astype(np.float32)
    return index, sign


def chunks(n: int, size: int = CHUNK) -> Iterator[tuple[int, int]]:
    """``(start, count)`` of consecutive chunks covering ``range(n)``."""
    for start in range(0, n, size):
        yield start, min(size, n - start)


def expand(values: np.ndarray, seed: int, n: int, sign: bool) -> np.ndarray:
    """The ``n`` hashed values ``ξ(i) · values[h(i)]`` (float32; ``ξ = 1`` without ``sign``),
    computed chunk by chunk. Negation is exact, so the result is bit for bit the same wherever it
    is computed."""
    values = np.asarray(values, dtype=np.float32)
    out = np.empty(n, dtype=np.float32)
    for start, count in chunks(n, CHUNK):
        index, xi = bucket_signs(seed, start, count, len(values))
        out[start:start + count] = values[index] * xi if sign else values[index]
    return out
