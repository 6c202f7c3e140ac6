"""The compression pipeline."""

from deepshrink.pipeline.compress import (
    CompressionResult,
    LayerRow,
    StageReport,
    check_recipe,
    compress,
    dense_bytes,
)

__all__ = ["CompressionResult", "LayerRow", "StageReport", "check_recipe", "compress", "dense_bytes"]
