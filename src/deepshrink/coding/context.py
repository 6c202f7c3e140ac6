"""Context-adaptive binary arithmetic coding of a pruned, shared weight matrix.

The positions of the kept weights cost as much as their values, and neither is a sequence of
independent symbols: whether an input pixel feeds a neuron depends on whether its neighbours do,
and on how often the other neurons keep it. A Huffman or ANS code of the gaps between kept
weights (Han et al. 2016) cannot see that. This module codes a pruned, shared tensor as CABAC
does video (Marpe, Schwarz and Wiegand 2003) and DeepCABAC does neural networks (Wiedemann et
al. 2019): every decision is binary, coded by a range coder with an adaptive probability chosen
by a *context* of what is already coded.

The tensor is viewed as a matrix ``[rows, cols]`` (a convolution ``[out, in, kh, kw]`` as
``[out, in*kh*kw]``) with an optional *grid* ``(h, w)``: the columns of a row are ``cols / (h*w)``
images of ``h x w`` (the 28x28 pixels feeding the first layer of LeNet-300-100, or the 5x5 taps
of a convolution kernel); without a grid ``h = 1, w = cols``.

Two streams, each one range coder:

* **mask**, one bit per element in row-major order (1 = kept). Context of bit ``(i, j)``, with
  ``(y, x)`` the grid position of column ``j``::

      left + 2*up + 4*col_bucket + 28*row_bucket          (112 contexts)

  ``left`` is the bit of column ``j - 1`` when ``x > 0`` (else 0), ``up`` that of ``j - w`` when
  ``y > 0`` (the pixel above, in the same row of the matrix); ``col_bucket`` (0..6) buckets the
  rate ``(c + 1/2) / (i + 1)`` of column ``j``'s kept bits ``c`` in the rows above by the
  thresholds :data:`COL_THRESHOLDS` / 256, ``row_bucket`` (0..3) the rate of row ``i``'s kept
  bits among its first ``j`` columns by :data:`ROW_THRESHOLDS` / 256.
* **values**: the codebook index ``v`` in ``[0, K)`` of every kept weight, row-major. With ``z``
  codebook entries below zero (the codebook is sorted, so ``v < z`` is a negative weight), a
  sign bit ``v >= z`` (not coded when ``z`` is 0 or ``K``), context 0 for the first kept weight
  of a row and ``1 + previous sign`` after; then the magnitude rank ``m`` (``v - z``, or
  ``z - 1 - v``) in a binary tree of depth ``D = bitlen(max(z, K - z) - 1)``, MSB first, one
  context per tree node and sign; a bit whose 1-branch holds no value of that sign is not coded
  (so no stream decodes outside the codebook).

Each context holds a 16-bit estimate of P(1) (starting at 1/2) and the number of bits it has
seen; after each bit it moves towards it by ``2^-r``, ``r = min(1 + bitlen(seen), 8)``: about a
frequency count over the first bits, then an exponential window of ~256 bits (the warm-up of
AV1's symbol adaptation, Han et al. 2021). The coder clamps it to [32, 65504] / 65536.
Measured on the files below, this beats fixed rates and two-speed mixing of rates 2^-4 and
2^-7 (as in VVC) by 1 %: most contexts see few bits.

The range coder is LZMA's (32-bit range, carry propagation through a cached byte): a 0 bit
takes ``bound = (range >> 16) * P(0)`` of the range. It ends the stream at
a value of its final interval whose low 24 bits are zero, and drops the first byte (always 0)
and those last 3 zero bytes, which the decoder reads back as zeros: a valid stream is read to
exactly 3 bytes past its end. Before that, each stream codes a 16-bit check value of its
decisions (``h = 31 h + bit mod 2^16``) at probability 1/2, so that a damaged tail (a truncated
stream decodes zeros there) or a flipped decision is refused rather than decoded to another
tensor (1 chance in 65536 of missing it).

Which contexts to use was measured on the Deep-Compression files of LeNet-300-100 and LeNet-5
(bench/context_coding.py compares the final sizes with Huffman and ANS): ``up`` with the 28x28
grid saves 6 % of LeNet-300-100 fc1's mask over ``left`` and the column rate alone; the row rate
0.3-0.8 % more. Diagonal and two-away neighbours, the same column in the previous row, the spatial
neighbourhood's column rates, and for values the column's or the row's mean magnitude, the
previous value's magnitude, or the magnitude tree conditioned on the previous sign, each saved
under 0.5 % or lost: the values are close to independent given their sign.

Decoding treats its input as untrusted: the work is bounded by the element and kept counts
(validated header fields), and a stream that ends early, a stream with bytes it never reads,
an impossible final coder state, a wrong check value or a mask that keeps another number of
weights than declared raise :class:`~deepshrink.errors.CorruptStream`.

The compiled coder (``_fastcode.ctx_encode`` / ``ctx_decode``) runs when the C extension is
built; :func:`encode_reference` / :func:`decode_reference` are the pure-Python specification
(the same bytes, a few hundred times slower) and the fallback. constriction's models are fixed
per call (or parametrised by arrays known in advance), so an adaptive context model, whose
probabilities depend on the symbols decoded so far, would need a Python call per bit there.
"""

from __future__ import annotations

import numpy as np

from deepshrink.coding import _util
from deepshrink.errors import ConfigError, CorruptStream

__all__ = ["encode", "decode", "encode_reference", "decode_reference", "check_grid", "COL_THRESHOLDS",
           "ROW_THRESHOLDS", "MASK_CONTEXTS"]

PROB_BITS = 16
ONE = 1 << PROB_BITS
P_MIN = 32
RATE_MAX = 8
WARM = 64
TOP = 1 << 24
#: The zero bytes that end every stream, which the encoder drops and the decoder reads back.
PAD = 3
#: Bits of the check value that ends every stream.
CHECK_BITS = 16
#: Rate thresholds (in 1/256) of the column and row buckets of the mask contexts.
COL_THRESHOLDS = (5, 13, 26, 51, 90, 154)
ROW_THRESHOLDS = (13, 26, 51)
MASK_CONTEXTS = 2 * 2 * (len(COL_THRESHOLDS) + 1) * (len(ROW_THRESHOLDS) + 1)
#: Largest codebook (indices are uint16).
MAX_K = (1 << 16) - 1

_ERRORS = {1: "ends early (it is truncated)", 2: "holds bytes it never reads",
           3: "ends in an impossible coder state", 4: "fails its check value"}


def check_grid(cols: int, grid: tuple[int, int] | None) -> tuple[int, int]:
    """The grid ``(h, w)`` of a row of ``cols`` elements: ``(1, cols)`` for None; else both at
    least 1 with ``h * w`` dividing ``cols`` (:class:`ConfigError` otherwise)."""
    if grid is None:
        return 1, max(cols, 1)
    h, w = (int(g) for g in grid)
    if h < 1 or w < 1 or (cols % (h * w) if cols else False):
        raise ConfigError(f"grid {grid} must be two positive integers whose product divides the row length {cols}")
    return h, w


def _depth(k: int, z: int) -> int:
    return max(0, max(z, k - z) - 1).bit_length()


def _check(rows: int, cols: int, k: int, z: int) -> None:
    if rows < 0 or cols < 0 or not 0 <= k <= MAX_K or not 0 <= z <= k:
        raise ConfigError(f"invalid context-coding arguments: {rows}x{cols}, K={k}, z={z}")


def encode(mask: np.ndarray, values: np.ndarray, k: int, z: int,
           grid: tuple[int, int] | None = None) -> tuple[bytes, bytes]:
    """Code a 2-D boolean ``mask`` and the codebook index (< ``k``) of every kept element in
    row-major order (``values``); ``z`` is the number of negative codebook entries. Returns the
    mask and value streams."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    if mask.ndim != 2:
        raise ConfigError(f"mask must be 2-D, got shape {mask.shape}")
    rows, cols = mask.shape
    _check(rows, cols, k, z)
    h, w = check_grid(cols, grid)
    vals = np.asarray(values)
    nnz = int(np.count_nonzero(mask))
    if vals.shape != (nnz,) or (nnz and (int(vals.min()) < 0 or int(vals.max()) >= k)):
        raise ConfigError(f"values must be {nnz} codebook indices in [0, {k})")
    vals = np.ascontiguousarray(vals, dtype=np.uint16)
    mask = (mask != 0).astype(np.uint8)
    if _util.FAST is not None:
        return _util.FAST.ctx_encode(mask.tobytes(), vals.tobytes(), rows, cols, h, w, k, z)
    return encode_reference(mask, vals, k, z, (h, w))


def decode(mask_data: bytes, value_data: bytes, rows: int, cols: int, k: int, z: int, nnz: int,
           grid: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode what :func:`encode` wrote: the boolean mask ``[rows, cols]`` and the ``nnz`` kept
    values (int64). The arguments come from validated header fields; the data is untrusted
    (:class:`CorruptStream`)."""
    _check(rows, cols, k, z)
    h, w = check_grid(cols, grid)
    if nnz < 0 or nnz > rows * cols or (nnz and not k):
        raise ConfigError(f"invalid kept count {nnz} for {rows}x{cols} with K={k}")
    mask_data, value_data = _util.as_buffer(mask_data), _util.as_buffer(value_data)
    if _util.FAST is None:
        return decode_reference(mask_data, value_data, rows, cols, k, z, nnz, (h, w))
    mask = np.zeros(rows * cols, dtype=np.uint8)
    vals = np.zeros(nnz, dtype=np.uint16)
    status = _util.FAST.ctx_decode(mask_data, value_data, rows, cols, h, w, k, z, nnz, mask, vals)
    _raise(status, nnz)
    return mask.reshape(rows, cols).astype(bool), vals.astype(np.int64)


def _raise(status: int, nnz: int) -> None:
    if status == 13:
        raise CorruptStream(f"context-coded mask does not keep the declared {nnz} weights")
    if status:
        stream, offset = ("mask", status - 4) if status < 9 else ("value", status - 8)
        raise CorruptStream(f"context-coded {stream} stream {_ERRORS[offset]}")


# ----------------------------------------------------------------------------------------------
# the pure-Python specification


class _Probs:
    """Per-context adaptive probabilities of a 1 (see the module docstring)."""

    def __init__(self, n: int):
        self.p = [ONE >> 1] * n
        self.n = [0] * n

    def p0(self, c: int) -> int:
        return ONE - min(max(self.p[c], P_MIN), ONE - P_MIN)

    def update(self, c: int, bit: int) -> None:
        r = min(1 + self.n[c].bit_length(), RATE_MAX)
        if bit:
            self.p[c] += (ONE - self.p[c]) >> r
        else:
            self.p[c] -= self.p[c] >> r
        self.n[c] = min(self.n[c] + 1, WARM)


class _Encoder:
    def __init__(self) -> None:
        self.low, self.range, self.cache, self.pending, self.hash = 0, 0xFFFFFFFF, 0, 1, 0
        self.out = bytearray()

    def _shift(self) -> None:
        if (self.low & 0xFFFFFFFF) < 0xFF000000 or self.low >> 32:
            carry, temp = self.low >> 32, self.cache
            for _ in range(self.pending):
                self.out.append((temp + carry) & 0xFF)
                temp = 0xFF
            self.pending = 0
            self.cache = (self.low >> 24) & 0xFF
        self.pending += 1
        self.low = (self.low & 0x00FFFFFF) << 8

    def bit(self, probs: _Probs | None, c: int, bit: int) -> None:
        """Code ``bit`` in context ``c``; with ``probs`` None at probability 1/2 (the check value)."""
        bound = (self.range >> PROB_BITS) * probs.p0(c) if probs is not None else self.range >> 1
        if bit:
            self.low += bound
            self.range -= bound
        else:
            self.range = bound
        if probs is not None:
            probs.update(c, bit)
            self.hash = (self.hash * 31 + bit) & 0xFFFF
        while self.range < TOP:
            self.range = (self.range << 8) & 0xFFFFFFFF
            self._shift()

    def finish(self) -> bytes:
        check = self.hash
        for b in range(CHECK_BITS - 1, -1, -1):
            self.bit(None, 0, (check >> b) & 1)
        self.low = (self.low + TOP - 1) & ~(TOP - 1)
        for _ in range(5):
            self._shift()
        return bytes(self.out[1:len(self.out) - PAD])


class _Decoder:
    def __init__(self, data: bytes):
        self.data, self.pos, self.range, self.code, self.hash = data, 0, 0xFFFFFFFF, 0, 0
        for _ in range(4):
            self.code = (self.code << 8) | self._byte()

    def _byte(self) -> int:
        v = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return v

    def bit(self, probs: _Probs | None, c: int) -> int:
        bound = (self.range >> PROB_BITS) * probs.p0(c) if probs is not None else self.range >> 1
        if self.code < bound:
            self.range, bit = bound, 0
        else:
            self.code -= bound
            self.range -= bound
            bit = 1
        if probs is not None:
            probs.update(c, bit)
            self.hash = (self.hash * 31 + bit) & 0xFFFF
        while self.range < TOP:
            self.range = (self.range << 8) & 0xFFFFFFFF
            self.code = ((self.code << 8) & 0xFFFFFFFF) | self._byte()
        return bit

    def check(self) -> int:
        check = 0
        for _ in range(CHECK_BITS):
            check = (check << 1) | self.bit(None, 0)
        if self.pos > len(self.data) + PAD:
            return 1
        if self.pos < len(self.data) + PAD:
            return 2
        if self.code >= self.range:
            return 3
        return 4 if check != self.hash else 0


def _bucket(count: int, seen: int, thresholds: tuple[int, ...]) -> int:
    return sum((2 * count + 1) * 128 >= t * (seen + 1) for t in thresholds)


def _mask_pass(coder, mask: np.ndarray, rows: int, cols: int, h: int, w: int) -> np.ndarray:
    """Encode (``coder`` an :class:`_Encoder`) or decode (a :class:`_Decoder`) the mask."""
    probs = _Probs(MASK_CONTEXTS)
    colcount = [0] * cols
    encoding = isinstance(coder, _Encoder)
    # one bytearray per row: a byte per element, as the compiled coder
    if encoding:
        out = [bytearray(r.tobytes()) for r in mask.reshape(rows, cols)]
    else:
        out = [bytearray(cols) for _ in range(rows)]
    for i in range(rows):
        m = out[i]
        rowcount = x = y = 0
        for j in range(cols):
            left = m[j - 1] if x > 0 else 0
            up = m[j - w] if y > 0 else 0
            c = (left + 2 * up + 4 * _bucket(colcount[j], i, COL_THRESHOLDS)
                 + 28 * _bucket(rowcount, j, ROW_THRESHOLDS))
            if encoding:
                bit = m[j]
                coder.bit(probs, c, bit)
            else:
                bit = m[j] = coder.bit(probs, c)
            colcount[j] += bit
            rowcount += bit
            x += 1
            if x == w:
                x = 0
                y += 1
                if y == h:
                    y = 0
    return np.frombuffer(b"".join(out), dtype=np.uint8).reshape(rows, cols)


def _value_pass(coder, mask: np.ndarray, values: list[int], k: int, z: int) -> list[int]:
    depth = _depth(k, z)
    probs = _Probs(3 + (2 << depth))
    encoding = isinstance(coder, _Encoder)
    out = []
    n = 0
    for row in mask:
        prev = -1
        for _ in range(int(row.sum())):
            v = values[n] if encoding else 0
            if z == 0:
                s = 1
            elif z == k:
                s = 0
            elif encoding:
                s = int(v >= z)
                coder.bit(probs, prev + 1, s)
            else:
                s = coder.bit(probs, prev + 1)
            side = k - z if s else z
            mag = (v - z if s else z - 1 - v) if encoding else 0
            got, node, tree = 0, 1, 3 + (s << depth)
            for b in range(depth - 1, -1, -1):
                bit = 0
                if (got | (1 << b)) < side:
                    if encoding:
                        bit = (mag >> b) & 1
                        coder.bit(probs, tree + node, bit)
                    else:
                        bit = coder.bit(probs, tree + node)
                got |= bit << b
                node = 2 * node + bit
            out.append(z + got if s else z - 1 - got)
            prev = s
            n += 1
    return out


def encode_reference(mask: np.ndarray, values: np.ndarray, k: int, z: int,
                     grid: tuple[int, int] | None = None) -> tuple[bytes, bytes]:
    """:func:`encode` in pure Python (the specification; same arguments, same bytes)."""
    mask = (np.asarray(mask) != 0).astype(np.uint8)
    rows, cols = mask.shape
    _check(rows, cols, k, z)
    h, w = check_grid(cols, grid)
    me, ve = _Encoder(), _Encoder()
    _mask_pass(me, mask, rows, cols, h, w)
    _value_pass(ve, mask, [int(v) for v in np.asarray(values).tolist()], k, z)
    return me.finish(), ve.finish()


def decode_reference(mask_data: bytes, value_data: bytes, rows: int, cols: int, k: int, z: int, nnz: int,
                     grid: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode` in pure Python (same results and errors)."""
    _check(rows, cols, k, z)
    h, w = check_grid(cols, grid)
    d = _Decoder(bytes(mask_data))
    mask = _mask_pass(d, np.zeros(0), rows, cols, h, w)
    status = d.check()
    if status:
        _raise(4 + status, nnz)
    if int(mask.sum()) != nnz:
        _raise(13, nnz)
    d = _Decoder(bytes(value_data))
    vals = _value_pass(d, mask, [], k, z)
    status = d.check()
    if status:
        _raise(8 + status, nnz)
    return mask.astype(bool), np.asarray(vals, dtype=np.int64)

