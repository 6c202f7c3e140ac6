"""Asymmetric numeral systems (ANS) coding through ``constriction``.

Payload layout (``encode``/``decode``)
--------------------------------------
An empty symbol array encodes to ``b""``. Otherwise::

    [model: varint tokens][ANS words, little-endian, final word's high zero bytes dropped]

Model: the frequencies of symbols ``0..alphabet_size-1`` (present symbols >= 1, absent
symbols 0) as unsigned LEB128 varints of at most 3 bytes. With ``n`` symbols and precision
``P`` (14 for ``alphabet_size <= 4096``, else ``ceil(log2(alphabet_size)) + 2``, at most 18,
so that every symbol of a large alphabet can be present):

* ``n <= 2**P``: the exact counts, summing to ``n`` (small streams: exact model, and most
  counts take one byte);
* ``n > 2**P``: the counts quantised to integers summing to ``2**P``
  (:func:`quantize_frequencies`).

Both cases are implied by ``count`` and ``alphabet_size``, which the reader knows. Token
``t`` means

* ``t`` even: one symbol of frequency ``t >> 1`` (>= 1);
* ``t`` odd: a run of ``(t >> 1) + 1`` absent symbols (frequency 0).

The model ends as soon as its tokens cover exactly ``alphabet_size`` symbols. Everything
after it is the ``uint32`` word array returned by ``AnsCoder.get_compressed()`` in
little-endian byte order, except that the zero bytes at the top of the last word are not
stored (the reader pads with zeros up to a whole word); the last stored byte is therefore
never zero. When only one symbol is present (its frequency
is the whole total) no words are stored and the decoder repeats that symbol.

Both sides build ``Categorical([0] + freq / total, perfect=False)`` from the same stored
integers, so encoder and decoder agree bit-exactly; message symbol ``s`` is coded as
constriction symbol ``s + 1``. Constriction index 0 is a sentinel of frequency 0, to which
constriction still gives the smallest representable probability (2**-24, a negligible
cost) at cumulative position 0. Without it, symbol 0 would code for free from the empty
coder state, so a message's trailing zeros would take no bits and a wrong ``count`` would go
unnoticed. With it, decoding past the end of the data yields the sentinel and fails.

Decoding raises :class:`CorruptStream` on a bad model, on constriction errors, on decoded
symbols of frequency 0 (including the sentinel), and when the coder is not exactly empty
after ``count`` symbols (trailing or missing data).

When the C extension is built, decoding runs there (``_fastcode.ans_decode``): it rebuilds
constriction's fixed-point model of ``Categorical(probs, perfect=False)`` (``fast_quantized_cdf``,
24-bit precision) and runs its ``AnsCoder`` (32-bit words, 64-bit state) bit-exactly, about
3x faster than constriction; constriction is the fallback and the reference in the tests.
"""

from __future__ import annotations

import heapq
import math

import constriction
import numpy as np

from deepshrink.coding import _util
from deepshrink.coding._util import check_alphabet, check_symbols, open_stream
from deepshrink.errors import ConfigError, CorruptStream

__all__ = ["encode", "decode", "encoded_size", "quantize_frequencies", "precision_bits", "PRECISION_BITS"]

#: Streams longer than ``2**P`` symbols store frequencies quantised to sum to ``2**P``, where
#: ``P = PRECISION_BITS`` for alphabets up to 4096 symbols (see :func:`precision_bits`).
PRECISION_BITS = 14
_MAX_VARINT_BYTES = 3


def precision_bits(alphabet_size: int) -> int:
    """Frequency precision P for an alphabet: 14, or ``ceil(log2(alphabet_size)) + 2``."""
    a = check_alphabet(alphabet_size)
    return max(PRECISION_BITS, (a - 1).bit_length() + 2)


def quantize_frequencies(counts: np.ndarray, precision: int = PRECISION_BITS) -> np.ndarray:
    """Integer frequencies (int64) summing to ``2**precision``, >= 1 exactly where ``counts > 0``.

    Starts from ``floor(count * 2**precision / n)`` (raised to 1 for rare symbols), then fixes
    the sum greedily, each unit going where it costs (or saves) the fewest coded bits
    ``count * log2(f)``. :class:`ConfigError` if more than ``2**precision`` symbols are
    present.
    """
    c = np.asarray(counts)
    if c.ndim != 1 or (c.size and c.dtype.kind not in "iu"):
        raise ConfigError("counts must be a 1-D integer array")
    c = c.astype(np.int64)
    if c.size and int(c.min()) < 0:
        raise ConfigError("counts must be >= 0")
    if not 1 <= precision <= 24:
        raise ConfigError(f"precision must be in 1..24, got {precision}")
    target = 1 << precision
    present = c > 0
    k = int(present.sum())
    if k == 0:
        raise ConfigError("cannot build a frequency table from all-zero counts")
    if k > target:
        raise ConfigError(f"at most {target} distinct symbols fit a {precision}-bit model, got {k}")
    n = int(c.sum())
    if n < 1 << 38:
        scaled = c * target // n
    else:  # c * target could overflow int64
        scaled = np.array([ci * target // n for ci in c.tolist()], dtype=np.int64)
    f = np.where(present, np.maximum(1, scaled), 0)
    diff = target - int(f.sum())
    idx = np.flatnonzero(present)
    cc = c[idx].astype(np.float64).tolist()
    ff = f[idx].tolist()
    log2 = math.log2
    if diff > 0:
        # Each unit raises some f by one, gaining count * log2((f+1)/f) bits; diff <= k.
        heap = [(-cc[j] * log2((ff[j] + 1) / ff[j]), j) for j in range(idx.size)]
        heapq.heapify(heap)
        for _ in range(diff):
            _, j = heapq.heappop(heap)
            ff[j] += 1
            heapq.heappush(heap, (-cc[j] * log2((ff[j] + 1) / ff[j]), j))
    elif diff < 0:
        # Each unit lowers some f > 1 by one, losing count * log2(f/(f-1)) bits; -diff <= k.
        heap = [(cc[j] * log2(ff[j] / (ff[j] - 1)), j) for j in range(idx.size) if ff[j] > 1]
        heapq.heapify(heap)
        for _ in range(-diff):
            _, j = heapq.heappop(heap)
            ff[j] -= 1
            if ff[j] > 1:
                heapq.heappush(heap, (cc[j] * log2(ff[j] / (ff[j] - 1)), j))
    f[idx] = ff
    return f


def _write_model(freqs: np.ndarray) -> bytes:
    """Tokens (see module docstring) for ``freqs`` as LEB128 varints."""
    nz = freqs > 0
    # Run starts of absent symbols and their lengths.
    z = (~nz).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], z, [0]])))
    run_start, run_end = edges[0::2], edges[1::2]
    pos = np.concatenate([np.flatnonzero(nz), run_start])
    tok = np.concatenate([freqs[nz] << 1, ((run_end - run_start - 1) << 1) | 1])
    tok = tok[np.argsort(pos, kind="stable")].astype(np.int64)
    # LEB128, at most 3 bytes per token (values < 2**17).
    nbytes = 1 + (tok >= 1 << 7) + (tok >= 1 << 14)
    out = np.zeros((tok.size, _MAX_VARINT_BYTES), dtype=np.int64)
    for b in range(_MAX_VARINT_BYTES):
        more = nbytes > b + 1
        out[:, b] = ((tok >> (7 * b)) & 0x7F) | (more.astype(np.int64) << 7)
    keep = np.arange(_MAX_VARINT_BYTES)[None, :] < nbytes[:, None]
    return out[keep].astype(np.uint8).tobytes()


def _read_model(raw: np.ndarray, alphabet_size: int, total: int) -> tuple[np.ndarray, int]:
    """Parse the model from the start of ``raw``; returns (frequencies, bytes used)."""
    a = alphabet_size
    head = raw[: _MAX_VARINT_BYTES * a].astype(np.int64)
    ends = np.flatnonzero(head < 0x80)  # last byte of every complete varint
    if ends.size == 0:
        raise CorruptStream("ANS stream ends inside its model")
    starts = np.concatenate([[0], ends[:-1] + 1])
    nb = ends - starts + 1
    # Only tokens up to the first over-long varint can belong to the model.
    ok = nb <= _MAX_VARINT_BYTES
    # Non-minimal varints (last byte 0 after a continuation) are rejected.
    ok &= ~((nb > 1) & (head[ends] == 0))
    valid_prefix = int(np.argmin(ok)) if not ok.all() else ok.size
    starts, ends, nb = starts[:valid_prefix], ends[:valid_prefix], nb[:valid_prefix]
    tok = np.zeros(starts.size, dtype=np.int64)
    for b in range(_MAX_VARINT_BYTES):
        has = nb > b
        tok[has] |= (head[starts[has] + b] & 0x7F) << (7 * b)
    is_run = (tok & 1).astype(bool)
    val = tok >> 1
    cover = np.where(is_run, val + 1, 1)
    covered = np.cumsum(cover)
    stop = int(np.searchsorted(covered, a))  # first token reaching a symbols
    if stop >= covered.size or int(covered[stop]) != a:
        raise CorruptStream("ANS model does not describe exactly alphabet_size symbols")
    is_run, val, cover = is_run[: stop + 1], val[: stop + 1], cover[: stop + 1]
    if np.any(~is_run & (val == 0)):
        raise CorruptStream("ANS model holds a zero frequency token")
    freqs = np.repeat(np.where(is_run, 0, val), cover)
    if int(freqs.sum()) != total:
        raise CorruptStream(f"ANS model frequencies sum to {int(freqs.sum())}, expected {total}")
    return freqs, int(ends[stop]) + 1


def _probabilities(freqs: np.ndarray, total: int) -> np.ndarray:
    """The model's float64 probabilities: the sentinel 0, then symbols 1..a (see module docstring)."""
    return np.concatenate([[0.0], freqs.astype(np.float64) / total])


def _model(freqs: np.ndarray, total: int) -> object:
    """Constriction model over the sentinel 0 and symbols 1..a (see module docstring)."""
    return constriction.stream.model.Categorical(_probabilities(freqs, total), perfect=False)


_FAST_ERRORS = {3: "its last word is zero", 4: "its model cannot be normalised"}


def _decode_words(words: bytes, freqs: np.ndarray, total: int, n: int) -> tuple[np.ndarray, bool, bool]:
    """Decode ``n`` symbols from the ANS ``words``: (symbols, coder empty after them, some
    decoded symbol has frequency 0). The compiled decoder (:data:`_util.FAST`) reproduces
    constriction's fixed-point model exactly; constriction itself is the fallback."""
    if _util.FAST is not None:
        out = np.empty(n, dtype=np.int64)
        status, empty, bad = _util.FAST.ans_decode(words, _probabilities(freqs, total), n, out)
        if status:
            raise CorruptStream(f"ANS stream does not decode: {_FAST_ERRORS[status]}")
        return out, bool(empty), bool(bad)
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
        out = coder.decode(_model(freqs, total), n)
        empty = coder.is_empty()
    except Exception as exc:  # constriction raises plain ValueError/RuntimeError
        raise CorruptStream(f"ANS stream does not decode: {exc}") from None
    out = np.asarray(out, dtype=np.int64) - 1
    bad = out.size != n or out.min() < 0 or out.max() >= freqs.size or bool(np.any(freqs[out] == 0))
    return out, empty, bad


def _frequencies(counts: np.ndarray) -> np.ndarray:
    """The stored model of a stream with symbol ``counts`` (see the module docstring)."""
    p = precision_bits(counts.size)
    return counts if int(counts.sum()) <= 1 << p else quantize_frequencies(counts, p)


#: Bytes :func:`encoded_size` adds to the information content for the final coder state.
_STATE_BYTES = 3


def encoded_size(counts: np.ndarray) -> int:
    """Estimated size in bytes of :func:`encode`'s payload for a stream with symbol ``counts``
    (one per symbol of the alphabet), without coding: the exact model size plus the
    information content of the symbols under the stored frequencies plus
    :data:`_STATE_BYTES` for the coder's final state (within a few bytes of the real size)."""
    c = np.asarray(counts, dtype=np.int64)
    if not c.any():
        return 0
    freqs = _frequencies(c)
    header = len(_write_model(freqs))
    total = int(freqs.sum())
    if int(freqs.max()) == total:
        return header
    present = c > 0
    bits = float(np.sum(c[present] * np.log2(total / freqs[present])))
    return header + math.ceil(bits / 8) + _STATE_BYTES


def encode(symbols: np.ndarray, alphabet_size: int) -> bytes:
    """ANS-code ``symbols`` (ints in ``[0, alphabet_size)``) into a self-describing payload."""
    a = check_alphabet(alphabet_size)
    syms = check_symbols(symbols, a)
    if syms.size == 0:
        return b""
    counts = np.bincount(syms, minlength=a).astype(np.int64)
    freqs = _frequencies(counts)
    total = int(freqs.sum())
    header = _write_model(freqs)
    if int(freqs.max()) == total:
        return header
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse((syms + 1).astype(np.int32), _model(freqs, total))
    words = np.ascontiguousarray(coder.get_compressed(), dtype="<u4").tobytes()
    return header + words.rstrip(b"\x00")


def decode(data: bytes, count: int, alphabet_size: int) -> np.ndarray:
    """Decode ``count`` symbols (int64) from a payload written by :func:`encode`.

    :class:`CorruptStream` on any malformed input (see the module docstring). ``count`` is
    trusted as an allocation size: the caller bounds it.
    """
    a, n, buf = open_stream(data, count, alphabet_size, "ANS")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    raw = np.frombuffer(buf, dtype=np.uint8)
    p = precision_bits(a)
    total = n if n <= 1 << p else 1 << p
    freqs, used = _read_model(raw, a, total)
    body = buf[used:]
    top = int(np.argmax(freqs))
    if int(freqs[top]) == total:
        if body:
            raise CorruptStream("single-symbol ANS stream must not carry coded words")
        return np.full(n, top, dtype=np.int64)
    if body and body[-1] == 0:
        raise CorruptStream("ANS stream must not end in a zero byte")
    out, empty, bad = _decode_words(body + b"\x00" * (-len(body) % 4), freqs, total, n)
    if not empty:
        raise CorruptStream(f"ANS stream holds data beyond its {n} symbols")
    if bad:
        raise CorruptStream("ANS stream decodes to symbols absent from its model")
    return out
