"""Storage of tensors as coded byte sections (sparse relative-index layout, codebooks, coders)."""

from deepshrink.storage.tensor_codec import (
    EncodedTensor,
    StreamReport,
    TensorCoding,
    TensorReport,
    check_shape,
    decode_tensor,
    encode_tensor,
)

__all__ = [
    "EncodedTensor",
    "StreamReport",
    "TensorCoding",
    "TensorReport",
    "check_shape",
    "decode_tensor",
    "encode_tensor",
]
