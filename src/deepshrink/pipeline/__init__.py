"""The compression pipeline."""

from deepshrink.pipeline.compress import CompressionResult, LayerRow, StageReport, compress, dense_bytes

__all__ = ["CompressionResult", "LayerRow", "StageReport", "compress", "dense_bytes"]
