"""The deepshrink file format (.dsz): bytes <-> a validated header and its sections. See docs/format.md.

Packing a PyTorch model into a file is :mod:`deepshrink.pipeline.pack`."""

from deepshrink.fileformat.container import MAGIC, VERSION, Container, Limits
from deepshrink.fileformat.model_file import (
    ModelFile,
    decode_tensors,
    pack_model_file,
    parse_header,
    read_model_file,
)

__all__ = [
    "MAGIC",
    "VERSION",
    "Container",
    "Limits",
    "ModelFile",
    "decode_tensors",
    "pack_model_file",
    "parse_header",
    "read_model_file",
]
