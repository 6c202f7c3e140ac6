"""Storage of tensors as coded byte sections (sparse relative-index layout, codebooks, coders)."""

from deepshrink.storage.tensor_codec import (
    DEFAULT_GAP_BITS,
    EncodedTensor,
    StreamReport,
    TensorCoding,
    TensorReport,
    check_descriptor,
    decode_tensor,
    encode_tensor,
    section_owner,
)

__all__ = [
    "DEFAULT_GAP_BITS",
    "EncodedTensor",
    "StreamReport",
    "TensorCoding",
    "TensorReport",
    "check_descriptor",
    "decode_tensor",
    "encode_tensor",
    "section_owner",
]
