"""The deepshrink file format (.dsz): container and model files. See docs/format.md."""

from deepshrink.fileformat.container import MAGIC, VERSION, Container, Limits
from deepshrink.fileformat.model_file import (
    ModelFile,
    PackReport,
    decode_tensors,
    default_coding,
    pack_model,
    parse_header,
    read_model_file,
    save_model,
)

__all__ = [
    "MAGIC",
    "VERSION",
    "Container",
    "Limits",
    "ModelFile",
    "PackReport",
    "decode_tensors",
    "default_coding",
    "pack_model",
    "parse_header",
    "read_model_file",
    "save_model",
]
