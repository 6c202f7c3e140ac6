"""One entry point for every coder: :class:`Coder`, :func:`encode_stream`, :func:`decode_stream`.

Payloads carry no symbol count; the caller stores ``count`` (and, for ``fixed``, ``bits``).
"""

from __future__ import annotations

import enum

import numpy as np

from deepshrink.coding import ans, fixed, huffman
from deepshrink.coding._util import as_int, check_alphabet, check_count, check_symbols
from deepshrink.errors import ConfigError, CorruptStream

__all__ = ["Coder", "STREAM_CODERS", "encode_stream", "decode_stream", "fixed_bits", "stream_size"]


class Coder(enum.StrEnum):
    """Entropy coder of a symbol stream, or of a whole tensor.

    ``context`` is not a stream coder: it selects the context-adaptive coding of a pruned,
    shared tensor's mask and values together (:mod:`deepshrink.coding.context`, the
    ``codebook/context`` encoding), chosen per tensor when smaller; every other stream of a file
    written with it is coded with ``ans``."""

    FIXED = "fixed"
    HUFFMAN = "huffman"
    ANS = "ans"
    CONTEXT = "context"


#: The coders :func:`encode_stream` and :func:`decode_stream` code a stream with on its own.
STREAM_CODERS = (Coder.FIXED, Coder.HUFFMAN, Coder.ANS)


def _coder(coder: object) -> Coder:
    try:
        c = Coder(coder)
    except ValueError:
        raise ConfigError(
            f"coder must be one of {[c.value for c in Coder]}, got {coder!r}"
        ) from None
    if c not in STREAM_CODERS:
        raise ConfigError(f"coder {c.value!r} codes whole tensors, not a stream on its own; "
                          f"a stream's coder is one of {[s.value for s in STREAM_CODERS]}")
    return c


def fixed_bits(alphabet_size: int, bits: int | None = None) -> int:
    """Bits per symbol of the fixed coder: ``bits``, or ``max(1, ceil(log2(alphabet_size)))``."""
    a = check_alphabet(alphabet_size)
    if bits is None:
        return max(1, (a - 1).bit_length())
    b = as_int(bits, "bits")
    if not 1 <= b <= 32:
        raise ConfigError(f"bits must be in 1..32, got {b}")
    if a > 1 << b:
        raise ConfigError(f"{b} bits cannot hold an alphabet of {a} symbols")
    return b


def encode_stream(
    symbols: np.ndarray, alphabet_size: int, coder: Coder | str, bits: int | None = None
) -> bytes:
    """Encode symbols in ``[0, alphabet_size)`` with ``coder``.

    ``bits`` only affects the ``fixed`` coder (default ``ceil(log2(alphabet_size))``, at
    least 1); it is validated but otherwise ignored by the entropy coders.
    """
    c = _coder(coder)
    a = check_alphabet(alphabet_size)
    syms = check_symbols(symbols, a)
    b = fixed_bits(a, bits)
    if c is Coder.FIXED:
        return fixed.pack_bits(syms, b)
    if c is Coder.HUFFMAN:
        return huffman.encode(syms, a)
    return ans.encode(syms, a)


def stream_size(counts: np.ndarray, coder: Coder | str, bits: int | None = None) -> int:
    """Bytes :func:`encode_stream` writes for a stream with symbol ``counts`` (one count per
    symbol of the alphabet), computed from the histogram alone: exact for ``fixed`` and
    ``huffman``, an estimate within a few bytes for ``ans`` (:func:`ans.encoded_size`)."""
    c = _coder(coder)
    counts = np.asarray(counts)
    if counts.ndim != 1 or (counts.size and counts.dtype.kind not in "iu"):
        raise ConfigError("counts must be a 1-D integer array")
    b = fixed_bits(counts.size, bits)
    if c is Coder.FIXED:
        return (int(counts.sum()) * b + 7) // 8
    if c is Coder.HUFFMAN:
        return huffman.encoded_size(counts)
    return ans.encoded_size(counts)


def decode_stream(
    data: bytes,
    coder: Coder | str,
    count: int,
    alphabet_size: int,
    bits: int | None = None,
) -> np.ndarray:
    """Decode ``count`` symbols (int64) written by :func:`encode_stream` with the same arguments.

    :class:`CorruptStream` if the payload is malformed or decodes to a symbol outside
    ``[0, alphabet_size)``, or if ``coder`` is ``context`` (a file's stream descriptor may name
    it only where the tensor's encoding decodes the stream itself); :class:`ConfigError` for
    invalid arguments.
    """
    if coder == Coder.CONTEXT:
        raise CorruptStream("a stream coded with 'context' is decoded by its tensor's encoding "
                            "(codebook/context), not on its own")
    c = _coder(coder)
    a = check_alphabet(alphabet_size)
    n = check_count(count)
    b = fixed_bits(a, bits)
    if c is Coder.FIXED:
        out = fixed.unpack_bits(data, b, n)
    elif c is Coder.HUFFMAN:
        out = huffman.decode(data, n, a)
    else:
        out = ans.decode(data, n, a)
    if out.size and (int(out.min()) < 0 or int(out.max()) >= a):
        raise CorruptStream(f"{c.value} stream decodes to a symbol outside [0, {a})")
    return out
