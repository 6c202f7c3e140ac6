"""Export to standard formats: ONNX (onnxruntime runs it) and dense safetensors."""

from deepshrink.export.dense import export, export_safetensors, onnx_agreement
from deepshrink.export.onnx_export import OPSET, save_onnx, to_onnx

__all__ = ["OPSET", "export", "export_safetensors", "onnx_agreement", "save_onnx", "to_onnx"]
