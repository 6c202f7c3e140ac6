"""Storage of tensors as coded byte sections.

* :mod:`deepshrink.storage.encodings`: the registry of encodings (raw, codebook dense/sparse,
  sparse float), each one class that encodes, validates, decodes and reports; they are declared
  from the fields and sections of :mod:`deepshrink.storage.fields` and report with
  :mod:`deepshrink.storage.report`.
* :mod:`deepshrink.storage.tensors`: typed compressed tensors (codebook indices, sparse
  positions, CSR views) for runtimes that work on the compressed form.
* :mod:`deepshrink.storage.tensor_codec`: chooses the encoding of a tensor (:func:`encode_tensor`).
"""

from deepshrink.storage.encodings import (
    ENCODINGS,
    CheckedDescriptor,
    EncodedTensor,
    Encoding,
    StreamReport,
    TensorReport,
    check_descriptor,
    decode_tensor,
    decode_typed,
    encoding_of,
    register_encoding,
    section_owner,
    tensor_report,
)
from deepshrink.storage.tensor_codec import DEFAULT_GAP_BITS, TensorCoding, encode_tensor
from deepshrink.storage.tensors import (
    CodebookTensor,
    CompressedTensor,
    CSRMatrix,
    DenseTensor,
    SparseCodebookTensor,
    SparseTensor,
)

__all__ = [
    "DEFAULT_GAP_BITS",
    "ENCODINGS",
    "CSRMatrix",
    "CheckedDescriptor",
    "CodebookTensor",
    "CompressedTensor",
    "DenseTensor",
    "EncodedTensor",
    "Encoding",
    "SparseCodebookTensor",
    "SparseTensor",
    "StreamReport",
    "TensorCoding",
    "TensorReport",
    "check_descriptor",
    "decode_tensor",
    "decode_typed",
    "encode_tensor",
    "encoding_of",
    "register_encoding",
    "section_owner",
    "tensor_report",
]
