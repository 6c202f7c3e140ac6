"""Canonical, length-limited Huffman coding, vectorised with numpy.

Code lengths are optimal under the 16-bit limit (package-merge, :func:`code_lengths`);
code words are canonical (:func:`canonical_codes`).

Payload layout (``encode``/``decode``)
--------------------------------------
An empty symbol array encodes to ``b""``. Otherwise the payload is one header byte followed
by one MSB-first bit stream, zero-padded to a whole byte::

    byte 0:  m m p p p w w w
             mm  = table mode: 0 = fixed-width lengths, 1 = delta-coded lengths (2, 3 invalid)
             ppp = number of zero padding bits at the end of the last byte (0..7)
             www = w = bit width of the largest code length L (L in 1..16, so w in 1..5)
    bits:    [code-length table for symbols 0..alphabet_size-1][code words of the symbols][pad]

The code-length table (length 0 = symbol absent) is stored in one of two modes, whichever is
smaller (ties go to mode 0):

* mode 0: every length as a ``w``-bit unsigned integer (``alphabet_size * w`` bits);
* mode 1: every length as a token relative to the previous length (the one before symbol 0
  is 0): ``0`` = same, ``100`` = +1, ``101`` = -1, ``11`` + ``w`` bits = this absolute length.
  Sorted k-means codebooks give smooth, unimodal histograms, so this is usually ~1-2 bits per
  symbol.

The table and code words are not byte aligned with each other. Code words are the canonical
codes of :func:`canonical_codes` (sorted by (length, symbol), first code all zeros).

The decoder is strict: the lengths must form a complete prefix code (Kraft sum exactly 1,
or a single symbol of length 1), ``w`` must equal the bit width of the largest length, every
code word must be valid, the last code word must end exactly where the padding starts, and
the padding bits must be zero; otherwise it raises :class:`CorruptStream`. It decodes with one
table lookup per code word in the C extension when that is built, else vectorised with numpy
(:func:`~deepshrink.coding._util.decode_prefix`); both give the same symbols and errors.
"""

from __future__ import annotations

import itertools

import numpy as np

from deepshrink.coding._util import (
    PACK_CHUNK,
    as_int,
    check_alphabet,
    check_symbols,
    decode_prefix,
    open_stream,
    pack_codes,
)
from deepshrink.errors import ConfigError, CorruptStream

__all__ = ["code_lengths", "canonical_codes", "encode", "decode", "encoded_size", "MAX_CODE_LENGTH"]

#: Longest code word :func:`encode` produces (and :func:`decode` accepts).
MAX_CODE_LENGTH = 16

_MODE_FIXED = 0
_MODE_DELTA = 1


# --------------------------------------------------------------------------------------------
# Code construction


def _package_merge(weights: np.ndarray, limit: int) -> np.ndarray:
    """Optimal code lengths (at most ``limit``) for ``k >= 2`` positive weights, ``k <= 2**limit``.

    Package-merge (Larmore & Hirschberg 1990), vectorised per level: list ``L`` holds the
    sorted leaves; list ``j`` merges the leaves with the pairwise sums ("packages") of list
    ``j + 1``. The first ``2k - 2`` items of list 1 are selected; a selected package selects
    the two items it was made of, which are always a prefix of the deeper list. A leaf's
    code length is the number of lists in which it is selected. With ``limit >= k - 1`` the
    result is an unrestricted optimal (Huffman) code.
    """
    k = weights.size
    order = np.argsort(weights, kind="stable")
    leaf_w = weights[order]
    levels: list[tuple[np.ndarray, np.ndarray]] = []  # per list: (leaf id or -1, weight)
    ids, w = order, leaf_w
    levels.append((ids, w))
    for _ in range(limit - 1):
        half = w.size // 2
        pkg = w[0 : 2 * half : 2] + w[1 : 2 * half : 2]
        merged_w = np.concatenate([leaf_w, pkg])
        merged_id = np.concatenate([order, np.full(half, -1, dtype=order.dtype)])
        srt = np.argsort(merged_w, kind="stable")  # ties: leaves first
        ids, w = merged_id[srt], merged_w[srt]
        levels.append((ids, w))
    lengths = np.zeros(k, dtype=np.int64)
    take = 2 * k - 2
    for ids, _ in reversed(levels):  # list 1 first
        sel = ids[:take]
        leaves = sel[sel >= 0]
        lengths[leaves] += 1
        take = 2 * (sel.size - leaves.size)
    return lengths


def code_lengths(counts: np.ndarray, max_len: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Optimal code lengths (uint8) for symbol ``counts``, limited to ``max_len`` bits.

    Absent symbols (count 0) get length 0; a single present symbol gets length 1. The
    lengths minimise ``sum(counts * lengths)`` among prefix codes with no code longer than
    ``max_len`` (package-merge); when the limit does not bind this is a Huffman code.
    """
    c = np.asarray(counts)
    if c.ndim != 1:
        raise ConfigError(f"counts must be a 1-D integer array, got shape {c.shape}")
    if c.size and c.dtype.kind not in "iu":
        raise ConfigError(f"counts must have an integer dtype, got {c.dtype}")
    if c.size and c.dtype == np.uint64 and int(c.max()) > np.iinfo(np.int64).max:
        raise ConfigError("counts must fit in int64")
    c = c.astype(np.int64)
    if c.size and int(c.min()) < 0:
        raise ConfigError("counts must be >= 0")
    lim = as_int(max_len, "max_len")
    if not 1 <= lim <= 32:
        raise ConfigError(f"max_len must be in 1..32, got {lim}")
    out = np.zeros(c.size, dtype=np.uint8)
    present = np.flatnonzero(c)
    k = present.size
    if k == 0:
        return out
    if k == 1:
        out[present] = 1
        return out
    if k > (1 << lim):
        raise ConfigError(f"{k} symbols cannot have codes of at most {lim} bits")
    w = c[present]
    # Every list of package-merge sums to at most limit * sum(w) <= 32 * k * max(w): keep
    # that clear of int64 overflow (only matters for astronomically large counts).
    shift = max(0, int(w.max()).bit_length() + k.bit_length() + 6 - 62)
    if shift:
        w = np.maximum(1, w >> shift)
    out[present] = _package_merge(w, min(lim, k - 1))
    return out


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code words (uint32) for code ``lengths``; 0 for absent symbols.

    Symbols are sorted by (length, symbol); the first gets the all-zero code and every next
    code is the previous one plus one, shifted left to its length. Equivalently,
    ``code_i / 2**l_i`` is the Kraft sum of the symbols before ``i``, which is what is
    computed here (vectorised). :class:`ConfigError` if a length exceeds 32 or the lengths
    violate the Kraft inequality.
    """
    ln = np.asarray(lengths)
    if ln.ndim != 1 or (ln.size and ln.dtype.kind not in "iu"):
        raise ConfigError("lengths must be a 1-D integer array")
    ln = ln.astype(np.int64)
    codes = np.zeros(ln.size, dtype=np.uint32)
    if ln.size == 0:
        return codes
    if int(ln.min()) < 0 or int(ln.max()) > 32:
        raise ConfigError("code lengths must be in 0..32")
    syms = np.flatnonzero(ln)
    if syms.size == 0:
        return codes
    order = syms[np.argsort(ln[syms], kind="stable")]
    ls = ln[order]
    top = int(ls[-1])
    unit = np.left_shift(np.int64(1), top - ls)  # 2**(L - l): weight in units of 2**-L
    kraft = np.cumsum(unit)
    if int(kraft[-1]) > (1 << top):
        raise ConfigError("code lengths violate the Kraft inequality (sum 2**-l > 1)")
    before = kraft - unit
    codes[order] = (before >> (top - ls)).astype(np.uint32)
    return codes


def _kraft_ok(lengths: np.ndarray) -> bool:
    present = lengths[lengths > 0].astype(np.int64)
    if present.size == 0:
        return False
    if present.size == 1:
        return int(present[0]) == 1
    total = int(np.sum(np.left_shift(np.int64(1), MAX_CODE_LENGTH - present)))
    return total == (1 << MAX_CODE_LENGTH)


# --------------------------------------------------------------------------------------------
# Code-length table


def _table_tokens(lengths: np.ndarray, w: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Smallest encoding of the length table: (mode, token codes, token lengths)."""
    ln = lengths.astype(np.int64)
    fixed_bits = ln.size * w
    d = np.diff(ln, prepend=0)
    esc = np.abs(d) > 1
    tok_len = np.where(d == 0, 1, np.where(esc, 2 + w, 3)).astype(np.int64)
    if int(tok_len.sum()) < fixed_bits:
        tok_code = np.where(d == 0, 0, np.where(d == 1, 0b100, 0b101)).astype(np.int64)
        tok_code = np.where(esc, (3 << w) | ln, tok_code)
        return _MODE_DELTA, tok_code, tok_len
    return _MODE_FIXED, ln, np.full(ln.size, w, dtype=np.int64)


def _delta_token_table(w: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Window lookup for mode-1 tokens: id 0 same, 1 (+1), 2 (-1), 3 + v escape to length v."""
    width = 2 + w
    v = np.arange(1 << width, dtype=np.int64)
    top2 = v >> (width - 2)
    third = (v >> (width - 3)) & 1
    sym = np.where(top2 < 2, 0, np.where(top2 == 2, 1 + third, 3 + (v & ((1 << w) - 1))))
    ln = np.where(top2 < 2, 1, np.where(top2 == 2, 3, width))
    return sym, ln, width


def _read_table(
    raw: np.ndarray, mode: int, w: int, alphabet_size: int, total_bits: int
) -> tuple[np.ndarray, int]:
    """Parse the length table from the bit stream; returns (lengths int64, end bit)."""
    a = alphabet_size
    if mode == _MODE_FIXED:
        end = a * w
        if end > total_bits:
            raise CorruptStream("huffman stream ends inside its code-length table")
        bits = np.unpackbits(raw[1 : 1 + (end + 7) // 8], count=end).reshape(a, w)
        weights = np.left_shift(np.int64(1), np.arange(w - 1, -1, -1, dtype=np.int64))
        lengths = bits.astype(np.int64) @ weights
        return lengths, end + 8
    sym, ln, width = _delta_token_table(w)
    stop = 8 + min(total_bits, a * width)
    try:
        tok, end = decode_prefix(raw, 8, stop, a, sym, ln, width)
    except CorruptStream as exc:
        raise CorruptStream(f"huffman code-length table is malformed: {exc}") from None
    delta = np.where(tok == 1, 1, np.where(tok == 2, -1, 0))
    csum = np.cumsum(delta)
    esc = tok >= 3
    idx = np.arange(a)
    last = np.maximum.accumulate(np.where(esc, idx, -1))
    base_at = np.where(esc, tok - 3 - csum, 0)
    base = np.where(last >= 0, base_at[np.maximum(last, 0)], 0)
    return base + csum, end


# --------------------------------------------------------------------------------------------
# Encode / decode


def _code(counts: np.ndarray) -> tuple[np.ndarray, int, int, np.ndarray, np.ndarray, int]:
    """Everything :func:`encode` writes for symbol ``counts`` except the code words:
    (lengths, width w, table mode, table token codes, token lengths, total payload bits)."""
    lengths = code_lengths(counts, MAX_CODE_LENGTH).astype(np.int64)
    w = int(lengths.max()).bit_length()
    mode, tcode, tlen = _table_tokens(lengths, w)
    return lengths, w, mode, tcode, tlen, int(tlen.sum()) + int(counts @ lengths)


def encoded_size(counts: np.ndarray) -> int:
    """Exact size in bytes of :func:`encode`'s payload for a stream with symbol ``counts``
    (one per symbol of the alphabet), computed from the code lengths without coding."""
    c = np.asarray(counts, dtype=np.int64)
    if not c.any():
        return 0
    return 1 + (_code(c)[-1] + 7) // 8


def encode(symbols: np.ndarray, alphabet_size: int) -> bytes:
    """Huffman-code ``symbols`` (ints in ``[0, alphabet_size)``) into a self-describing payload."""
    a = check_alphabet(alphabet_size)
    syms = check_symbols(symbols, a)
    if syms.size == 0:
        return b""
    counts = np.bincount(syms, minlength=a)
    lengths, w, mode, tcode, tlen, total = _code(counts)
    codes = canonical_codes(lengths).astype(np.int64)
    chunks = (syms[i : i + PACK_CHUNK] for i in range(0, syms.size, PACK_CHUNK))
    parts = itertools.chain([(tcode, tlen)], ((codes.take(c), lengths.take(c)) for c in chunks))
    body = pack_codes(total, parts)
    pad = (-total) % 8
    return bytes([(mode << 6) | (pad << 3) | w]) + body


def decode(data: bytes, count: int, alphabet_size: int) -> np.ndarray:
    """Decode ``count`` symbols (int64) from a payload written by :func:`encode`.

    :class:`CorruptStream` on any malformed input (see the module docstring).
    """
    a, n, buf = open_stream(data, count, alphabet_size, "huffman")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    head = buf[0]
    mode, pad, w = head >> 6, (head >> 3) & 7, head & 7
    if mode not in (_MODE_FIXED, _MODE_DELTA):
        raise CorruptStream(f"huffman stream has unknown table mode {mode}")
    if not 1 <= w <= MAX_CODE_LENGTH.bit_length():
        raise CorruptStream(f"huffman stream has invalid length width {w}")
    total_bits = 8 * (len(buf) - 1) - pad
    # Each table entry takes >= 1 bit and each symbol >= 1 bit: bound before allocating.
    min_table = a * w if mode == _MODE_FIXED else a
    if total_bits < min_table + n:
        raise CorruptStream(
            f"huffman stream of {len(buf)} bytes is too short for {n} symbols over an "
            f"alphabet of {a}"
        )
    raw = np.frombuffer(buf, dtype=np.uint8)
    if pad and int(raw[-1]) & ((1 << pad) - 1):
        raise CorruptStream("huffman stream has nonzero padding bits")
    padded = np.concatenate([raw, np.zeros(3, dtype=np.uint8)])

    lengths, start = _read_table(padded, mode, w, a, total_bits)
    if int(lengths.min()) < 0 or int(lengths.max()) > MAX_CODE_LENGTH:
        raise CorruptStream(f"huffman code lengths must be in 0..{MAX_CODE_LENGTH}")
    top = int(lengths.max())
    if top.bit_length() != w:
        raise CorruptStream(f"huffman header width {w} does not match longest code {top}")
    if not _kraft_ok(lengths):
        raise CorruptStream("huffman code lengths do not form a complete prefix code")

    syms = np.flatnonzero(lengths)
    order = syms[np.argsort(lengths[syms], kind="stable")]
    span = np.left_shift(np.int64(1), top - lengths[order])
    fill = (1 << top) - int(span.sum())  # > 0 only for a single symbol of length 1
    sym_table = np.concatenate([np.repeat(order, span), np.zeros(fill, dtype=np.int64)])
    len_table = np.concatenate([np.repeat(lengths[order], span), np.zeros(fill, dtype=np.int64)])

    stop = 8 + total_bits
    out, end = decode_prefix(padded, start, stop, n, sym_table, len_table, top)
    if end != stop:
        raise CorruptStream(
            f"huffman stream has {stop - end} undecoded bits after the last of {n} symbols"
        )
    return out
