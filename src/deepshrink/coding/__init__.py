"""Lossless coding of integer symbol streams: fixed-length, canonical Huffman and ANS; and the
context-adaptive binary coding of pruned, shared tensors (:mod:`deepshrink.coding.context`).

The stream coders are vectorised with numpy (or run inside ``constriction``); none loops in
Python per symbol (the context coder does only as a fallback). The Huffman and ANS decoders
and the context coder run compiled when the optional C extension ``deepshrink.coding._fastcode``
was built at install time (one table lookup per symbol); the numpy/constriction/Python
decoders are the fallback and give the same results and errors. Decoders
treat their input as untrusted and raise :class:`~deepshrink.errors.CorruptStream` on malformed
data; bad arguments raise :class:`~deepshrink.errors.ConfigError`. :func:`stream_size` gives
the coded size of a stream from its histogram alone.
"""

from deepshrink.coding import ans, huffman
from deepshrink.coding.entropy import entropy_bits, histogram
from deepshrink.coding.fixed import pack_bits, unpack_bits
from deepshrink.coding.huffman import canonical_codes, code_lengths
from deepshrink.coding.relative import decode_positions, encode_positions
from deepshrink.coding.streams import STREAM_CODERS, Coder, decode_stream, encode_stream, fixed_bits, stream_size

__all__ = [
    "Coder",
    "STREAM_CODERS",
    "ans",
    "canonical_codes",
    "code_lengths",
    "decode_positions",
    "decode_stream",
    "encode_positions",
    "encode_stream",
    "entropy_bits",
    "fixed_bits",
    "histogram",
    "huffman",
    "pack_bits",
    "stream_size",
    "unpack_bits",
]
