"""Shared argument validation and bit-level helpers of :mod:`deepshrink.coding` (private)."""

from __future__ import annotations

import operator
import os
from collections.abc import Iterable
from types import ModuleType

import numpy as np

from deepshrink.errors import ConfigError, CorruptStream

#: Largest alphabet any coder accepts (symbols are at most 16-bit indices).
MAX_ALPHABET = 1 << 16


def _load_extension() -> ModuleType | None:
    """The compiled decoders, unless unavailable (no compiler at install time) or disabled by
    the environment variable ``DEEPSHRINK_NO_EXTENSION=1``."""
    if os.environ.get("DEEPSHRINK_NO_EXTENSION", "") not in ("", "0"):
        return None
    try:
        from deepshrink.coding import _fastcode
    except ImportError:
        return None
    return _fastcode


#: :mod:`deepshrink.coding._fastcode` (compiled table decoders for Huffman and ANS), or None:
#: then the numpy decoders run, which are also the reference the compiled ones are tested against.
FAST: ModuleType | None = _load_extension()


def as_int(value: object, name: str) -> int:
    """``value`` as a Python int (bools rejected), else :class:`ConfigError`."""
    if isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be an integer, got a bool ({value!r})")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(
            f"{name} must be an integer, got {type(value).__name__} ({value!r})"
        ) from None


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

#: Code words packed per vectorised step (bounds the encoder's temporaries to ~50 MiB).
PACK_CHUNK = 1 << 20
#: Bit positions examined per vectorised decoding step (bounds the decoder's temporaries to
#: ~100 MiB whatever the stream length).
DECODE_CHUNK_BITS = 1 << 22


def open_stream(data: object, count: object, alphabet_size: object, coder: str) -> tuple[int, int, bytes]:
    """Validate a decoder's arguments: (alphabet size, count, payload). An empty stream must
    hold exactly zero symbols and vice versa, else :class:`CorruptStream`."""
    a = check_alphabet(alphabet_size)
    n = check_count(count)
    buf = as_buffer(data)
    if n == 0 and buf:
        raise CorruptStream(f"{coder} stream of 0 symbols must be empty, got {len(buf)} bytes")
    if n and not buf:
        raise CorruptStream(f"{coder} stream of {n} symbols is empty")
    return a, n, buf


def pack_codes(total_bits: int, parts: Iterable[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """Concatenate variable-length code words MSB-first into ``ceil(total_bits / 8)`` bytes.

    ``parts`` yields ``(codes, lengths)`` array pairs in stream order; ``codes[i]`` holds
    ``lengths[i]`` (1..17) significant bits. Code words never overlap, so OR-ing their bits
    equals adding them, which lets ``np.bincount`` scatter a whole part at once; parts that
    share a boundary byte are added the same way. Padding bits are zero.
    """
    nbytes = (total_bits + 7) // 8
    out = np.zeros(nbytes + 3, dtype=np.uint8)
    bit = 0
    for codes, lengths in parts:
        lens = lengths.astype(np.int64, copy=False)
        if lens.size == 0:
            continue
        ends = bit + np.cumsum(lens)
        offs = ends - lens
        base = bit >> 3
        # 24-bit big-endian window starting at the byte that holds the code word's first bit.
        v = codes.astype(np.int64, copy=False) << (24 - lens - (offs & 7))
        byte = (offs >> 3) - base
        idx = np.concatenate([byte, byte + 1, byte + 2])
        val = np.concatenate([(v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF]).astype(np.float64)
        acc = np.bincount(idx, weights=val).astype(np.uint8)
        out[base : base + acc.size] += acc
        bit = int(ends[-1])
    if bit != total_bits:  # internal consistency, not input validation
        raise RuntimeError(f"packed {bit} bits, expected {total_bits}")
    return out[:nbytes].tobytes()


def windows(buf: np.ndarray, start: int, stop: int, width: int, step: int = 1) -> np.ndarray:
    """The ``width``-bit (<= 17) MSB-first window at bit positions ``start, start + step, ...
    < stop``.

    ``buf`` is a uint8 array that must extend at least 2 bytes past bit ``stop - 1``'s byte
    (callers pad it with zeros).
    """
    dt = np.int32 if stop < (1 << 30) else np.int64
    n = stop - start
    if step == 1:
        b0 = start >> 3
        b1 = ((stop - 1) >> 3) + 1 if n > 0 else b0
        seg = buf[b0 : b1 + 2].astype(dt)
        v = (seg[:-2] << 16) | (seg[1:-1] << 8) | seg[2:]
        first = start & 7
        shifts = (24 - width - np.arange(8, dtype=dt)).astype(dt)
        w = np.repeat(v, 8)[first : first + n]
        w >>= np.tile(shifts, b1 - b0)[first : first + n]
    else:
        pos = np.arange(start, stop, step, dtype=np.int64)
        byte = pos >> 3
        w = (
            (buf.take(byte).astype(dt) << 16)
            | (buf.take(byte + 1).astype(dt) << 8)
            | buf.take(byte + 2).astype(dt)
        )
        w >>= (24 - width - (pos & 7)).astype(dt)
    w &= (1 << width) - 1
    return w


_INVALID_CODE, _PAST_END = 1, 2  # status codes of FAST.prefix_decode
_PREFIX_ERRORS = {
    _INVALID_CODE: "invalid code word in the stream",
    _PAST_END: "code word running past the end of the stream",
}


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
    inside [start, stop). Returns ``(symbols int64, end)`` where ``end`` is the absolute bit
    position after the last code word. ``buf`` must hold at least 2 zero bytes past ``stop``.

    With the compiled extension (:data:`FAST`) this is one table lookup per code word.
    Otherwise the bits are processed in regions of at most :data:`DECODE_CHUNK_BITS`; each
    region is decoded fully vectorised by :func:`_decode_region` and the next region starts
    where the last complete code word ended. Both raise the same errors.
    """
    n = stop - start
    if count > n:
        raise CorruptStream(
            f"stream claims {count} code words but holds only {n} bits (each takes >= 1 bit)"
        )
    out = np.empty(count, dtype=np.int64)
    if count == 0:
        return out, start
    valid_lens = np.unique(len_table[len_table > 0]).astype(np.int64)
    if valid_lens.size == 0:
        raise CorruptStream("prefix code has no valid code word")
    if FAST is not None:
        status, end = FAST.prefix_decode(
            buf, start, stop, count, np.ascontiguousarray(sym_table, dtype=np.int32),
            np.ascontiguousarray(len_table, dtype=np.uint8), width, out,
        )
        if status:
            raise CorruptStream(_PREFIX_ERRORS[status])
        return out, end
    # All code words are multiples of g bits, so only every g-th position can start one
    # (g > 1 e.g. for equal-length codes, whose bit phases would never synchronise).
    g = int(np.gcd.reduce(valid_lens))
    syms_of = sym_table.astype(np.int64)
    lens_of = len_table.astype(np.int64)
    pos, done = start, 0
    while done < count:
        region_end = min(stop, pos + max(DECODE_CHUNK_BITS, 64))  # > any code word
        want = min(count - done, region_end - pos)
        syms, end = _decode_region(buf, pos, region_end, want, syms_of, lens_of, width, g)
        if syms.size == 0 or (region_end == stop and syms.size < want):
            raise CorruptStream(_PREFIX_ERRORS[_PAST_END])
        out[done : done + syms.size] = syms
        done += syms.size
        pos = end
    return out, pos


def _decode_region(
    buf: np.ndarray,
    start: int,
    stop: int,
    want: int,
    sym_table: np.ndarray,
    len_table: np.ndarray,
    width: int,
    g: int,
) -> tuple[np.ndarray, int]:
    """Decode up to ``want`` code words that lie entirely in [start, stop).

    ``nxt(i) = i + len(window(i))`` is computed at every candidate position ``start + g*i``
    and the chain ``0 -> nxt(0) -> ...`` is followed by pointer doubling
    (:func:`_follow_chain`). Index ``m`` (= number of candidates) stands for a code word
    ending exactly at ``stop``, ``m + 1`` for one crossing ``stop`` (decoding pauses), and
    ``m + 2`` for an invalid code word (:class:`CorruptStream`).
    """
    n = stop - start
    dt = np.int32 if n + 3 < (1 << 31) else np.int64
    win = windows(buf, start, stop, width, g)
    m = win.size
    lens = len_table.astype(dt).take(win)
    nxt = np.arange(m, dtype=dt) * dt(g) + lens
    jump = np.empty(m + 3, dtype=dt)
    jump[:m] = np.where(lens == 0, m + 2, np.where(nxt > n, m + 1, nxt // dt(g) if g > 1 else nxt))
    jump[m : m + 2] = m + 1
    jump[m + 2] = m + 2
    del nxt, lens

    p = _follow_chain(jump, want)
    if int(p[-1]) == m + 2:
        raise CorruptStream(_PREFIX_ERRORS[_INVALID_CODE])
    decoded = int(np.count_nonzero(p[1:] <= m))
    syms = sym_table.take(win.take(p[:decoded]))
    return syms, start + int(p[decoded]) * g


def _follow_chain(jump: np.ndarray, count: int) -> np.ndarray:
    """Chain positions ``p[j] = nxt^j(0)`` for ``j = 0..count`` by pointer doubling.

    ``jump`` is ``nxt`` over indices ``0..m+2``; the last three are sentinels that map into
    the absorbing last two. Invariant at level ``k``: ``jump = nxt^(2^k)`` restricted to a
    domain that holds the whole chain and is closed under ``jump``, and ``p`` holds
    ``p[0 .. 2^k - 1]``; then ``jump[p]`` are ``p[2^k .. 2^(k+1) - 1]`` (seed doubling, O(count)
    work in total).

    Prefix codes self-synchronise, so the image of ``nxt^(2^k)`` quickly shrinks towards
    the chain itself; the domain is then shrunk to ``p`` plus that image (still closed and
    still holding the chain), which makes the later squarings ~avg-code-length times
    cheaper. ``jump`` and ``p`` are kept as indices into the domain (sorted, so the
    sentinels stay last). Shrinking stops being attempted once it no longer pays.
    """
    dt = jump.dtype
    dom: np.ndarray | None = None  # domain indices (None: identity)
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
        mark[-3:] = True
        keep = np.flatnonzero(mark).astype(dt)
        if keep.size > 0.85 * size:
            shrink = False
            continue
        remap = np.zeros(size, dtype=dt)
        remap[keep] = np.arange(keep.size, dtype=dt)
        jump = remap.take(jump.take(keep))
        p = remap.take(p)
        dom = keep if dom is None else dom.take(keep)
