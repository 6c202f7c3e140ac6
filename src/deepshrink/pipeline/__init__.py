"""The compression pipeline, and packing models into deepshrink files."""

from deepshrink.pipeline.compress import (
    CompressionResult,
    LayerRow,
    StageReport,
    check_recipe,
    compress,
    dense_bytes,
)
from deepshrink.pipeline.context import CompressContext, DataSource
from deepshrink.pipeline.pack import PackReport, default_coding, pack_model, save_model

__all__ = [
    "CompressContext",
    "DataSource",
    "CompressionResult",
    "LayerRow",
    "PackReport",
    "StageReport",
    "check_recipe",
    "compress",
    "default_coding",
    "dense_bytes",
    "pack_model",
    "save_model",
]
