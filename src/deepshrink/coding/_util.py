"""Shared argument validation and bit-level helpers of :mod:`deepshrink.coding` (private)."""

from __future__ import annotations

import operator

import numpy as np

from deepshrink.errors import ConfigError, CorruptStream

#: Largest alphabet any coder accepts (symbols are at most 16-bit indices).
MAX_ALPHABET = 1 << 16


def as_int(value: object, name: str) -> int:
    """``value`` as a Python int (bools rejected), else :class:`ConfigError`."""
    if isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be an integer, got a bool ({value!r})")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"{name} must be an integer, got {type(value).__name__} ({value!r})") from None


def check_alphabet(alphabet_size: object) -> int:
    a = as_int(alphabet_size, "alphabet_size")
    if not 1 <= a <= MAX_ALPHABET:
        raise ConfigError(f"alphabet_size must be in 1..{MAX_ALPHABET}, got {a}")
    return a


def check_count(count: object) -> int:
    c = as_int(count, "count")
    if c < 0:
        raise ConfigError(f"count must be >= 0, got {c}")
    return c


def as_symbols(symbols: object, name: str = "symbols") -> np.ndarray:
    """Validate a 1-D integer array and return it as an int64 array (no range check)."""
    arr = np.asarray(symbols)
    if arr.ndim != 1:
        raise ConfigError(f"{name} must be a 1-D integer array, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise ConfigError(f"{name} must have an integer dtype, got {arr.dtype}")
    if arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
        raise ConfigError(f"{name} holds a value too large for int64 ({int(arr.max())})")
    return arr.astype(np.int64, copy=False)


def check_symbols(symbols: object, alphabet_size: int, name: str = "symbols") -> np.ndarray:
    """Validate symbols against ``[0, alphabet_size)``; return them as int64."""
    arr = as_symbols(symbols, name)
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= alphabet_size:
            bad = lo if lo < 0 else hi
            raise ConfigError(f"{name} must lie in [0, {alphabet_size}), found {bad}")
    return arr


def as_buffer(data: object) -> bytes:
    """Coded input as ``bytes`` (bytes, bytearray, memoryview); else :class:`ConfigError`."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise ConfigError(f"coded data must be bytes, got {type(data).__name__}")


# --------------------------------------------------------------------------------------------
# Variable-length bit fields (MSB-first), shared by the Huffman coder.


def pack_codes(codes: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Concatenate variable-length code words MSB-first into bytes.

    ``codes[i]`` holds ``lengths[i]`` (1..17) significant bits. Returns the packed bytes
    (zero-padded to a whole byte) and the exact number of bits written. Code words never
    overlap, so OR-ing their bits equals adding them, which lets ``np.bincount`` do the
    scatter in one vectorised call.
    """
    lens = lengths.astype(np.int64, copy=False)
    if lens.size == 0:
        return b"", 0
    ends = np.cumsum(lens)
    total = int(ends[-1])
    offs = ends - lens
    nbytes = (total + 7) // 8
    # 24-bit big-endian window starting at the byte holding the first bit of the code word.
    v = codes.astype(np.int64, copy=False) << (24 - lens - (offs & 7))
    byte = offs >> 3
    idx = np.concatenate([byte, byte + 1, byte + 2])
    val = np.concatenate([(v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF]).astype(np.float64)
    out = np.bincount(idx, weights=val, minlength=nbytes + 2)[:nbytes]
    return out.astype(np.uint8).tobytes(), total


def windows(buf: np.ndarray, start: int, stop: int, width: int) -> np.ndarray:
    """The ``width``-bit (<= 17) MSB-first window starting at every bit position in [start, stop).

    ``buf`` is a uint8 array that must extend at least 2 bytes past bit ``stop - 1``'s byte
    (callers pad it with zeros); bits past the real data read as zero.
    """
    n = stop - start
    dt = np.int32 if stop < (1 << 30) else np.int64
    b0 = start >> 3
    b1 = ((stop - 1) >> 3) + 1 if n > 0 else b0
    seg = buf[b0 : b1 + 2].astype(dt)
    v = (seg[:-2] << 16) | (seg[1:-1] << 8) | seg[2:]
    first = start & 7
    shifts = (24 - width - np.arange(8, dtype=dt)).astype(dt)
    w = np.repeat(v, 8)[first : first + n]
    w >>= np.tile(shifts, b1 - b0)[first : first + n]
    w &= (1 << width) - 1
    return w


def decode_prefix(
    buf: np.ndarray,
    start: int,
    stop: int,
    count: int,
    sym_table: np.ndarray,
    len_table: np.ndarray,
    width: int,
) -> tuple[np.ndarray, int]:
    """Decode ``count`` code words of a prefix code from bits [start, stop) of ``buf``.

    ``sym_table``/``len_table`` map every ``width``-bit window to the symbol and length of
    the code word it begins with (length 0 = no valid code word). Every code word must lie
    inside [start, stop). Returns ``(symbols, end)`` where ``end`` is the absolute bit
    position after the last code word.

    Decoding is fully vectorised: ``nxt[i] = i + len(window(i))`` is computed for every bit
    position, and the chain 0 -> nxt(0) -> ... is followed with pointer doubling: the start
    of code word ``m`` is ``nxt^m(0)``, composed from ``nxt^(2^k)`` by the binary digits of
    ``m``; see :func:`_follow_chain`.
    """
    n = stop - start
    if count > n:
        raise CorruptStream(
            f"stream claims {count} code words but holds only {n} bits (each takes >= 1 bit)"
        )
    if count == 0:
        return np.zeros(0, dtype=np.int64), start
    dt = np.int32 if n + 2 < (1 << 31) else np.int64
    # All code words are multiples of g bits, so only every g-th position can start one
    # (g > 1 e.g. for equal-length codes, whose bit phases would never synchronise).
    valid_lens = np.unique(len_table[len_table > 0]).astype(np.int64)
    g = int(np.gcd.reduce(valid_lens)) if valid_lens.size else 1
    win = windows(buf, start, stop, width)
    if g > 1:
        win = np.ascontiguousarray(win[::g])
    m = win.size  # candidate positions 0, g, 2g, ... < n; index m = position m*g, m + 1 = error
    lens = len_table.astype(dt).take(win)
    nxt = np.arange(m, dtype=dt) * dt(g) + lens
    bad = m + 1
    jump = np.empty(m + 2, dtype=dt)
    jump[:m] = np.where((lens > 0) & (nxt <= n), nxt // dt(g), bad)
    jump[m:] = bad
    del nxt, lens

    p = _follow_chain(jump, count)
    end = int(p[-1])
    if end > m:
        raise CorruptStream("invalid code word or code word running past the end of the stream")
    syms = sym_table.astype(np.int64).take(win.take(p[:-1]))
    return syms, start + end * g


def _follow_chain(jump: np.ndarray, count: int) -> np.ndarray:
    """Positions ``p[m] = nxt^m(0)`` for ``m = 0..count`` by pointer doubling.

    ``jump`` is ``nxt`` over positions ``0..m+1``, where ``m`` (one past the region) and
    ``m + 1`` (error) are absorbing sentinels that both map to ``m + 1``.
    Invariant at level ``k``: ``jump = nxt^(2^k)`` restricted to a domain ``dom`` that holds
    the whole chain and is closed under ``jump``, and ``p`` holds ``p[0 .. 2^k - 1]``; then
    ``jump[p]`` are ``p[2^k .. 2^(k+1) - 1]`` (seed doubling, O(count) in total).

    Prefix codes self-synchronise, so the image of ``nxt^(2^k)`` quickly shrinks towards
    the chain itself; the domain is then shrunk to ``p`` plus that image (still closed and
    still holding the chain), which makes the later squarings ~avg-code-length times
    cheaper. ``jump`` and ``p`` are kept as indices into ``dom`` (sorted, so the two
    sentinels stay last). Shrinking stops being attempted once it no longer pays (e.g.
    fixed-length codes, whose bit phases never merge).
    """
    dt = jump.dtype
    dom: np.ndarray | None = None  # domain positions (None: identity 0..m+1)
    shrink = True
    p = np.zeros(1, dtype=dt)
    while True:
        p = np.concatenate([p, jump.take(p[: count + 1 - p.size])])
        if p.size > count:
            return p if dom is None else dom.take(p)
        jump = jump.take(jump)
        if not shrink:
            continue
        size = jump.size
        mark = np.zeros(size, dtype=bool)
        mark[jump] = True
        mark[p] = True
        mark[-2:] = True
        keep = np.flatnonzero(mark).astype(dt)
        if keep.size > 0.85 * size:
            shrink = False
            continue
        remap = np.zeros(size, dtype=dt)
        remap[keep] = np.arange(keep.size, dtype=dt)
        jump = remap.take(jump.take(keep))
        p = remap.take(p)
        dom = keep if dom is None else dom.take(keep)
