"""deepshrink: make trained PyTorch networks small and fast for constrained devices.

The public API::

    import deepshrink as ds
    data = ds.load_dataset("fashion-mnist")                 # train / val / test splits
    model = ds.build_model("lenet-300-100")
    ds.fit(model, data.tensors("train"), data.tensors("val"), ds.TrainConfig(epochs=20))
    result = ds.compress(model, data, ds.load_recipe("deep-compression"))
    open("model.dsz", "wb").write(result.data)             # or ds.save_model(...)
    net = ds.load("model.dsz")                               # runs from the file alone
    ds.export("model.dsz", "model.onnx")
"""

from deepshrink._version import __version__
from deepshrink.analysis.analyze import Analysis, analyze
from deepshrink.analysis.budget import Budgeted, Target, TargetUnreachable, auto_compress
from deepshrink.data import Dataset, InputSpec, load_dataset
from deepshrink.errors import DeepshrinkError, FormatError
from deepshrink.export import export, to_onnx
from deepshrink.fileformat import Limits
from deepshrink.inspect import info
from deepshrink.graph import trace
from deepshrink.models import build_model, load_weights, save_weights
from deepshrink.pipeline import CompressionResult, compress, pack_model, save_model
from deepshrink.recipes import Recipe, builtin_recipes, load_recipe
from deepshrink.runtime import CompressedModel, load
from deepshrink.train import TrainConfig, evaluate, fit

__all__ = [
    "Analysis",
    "Budgeted",
    "Target",
    "TargetUnreachable",
    "analyze",
    "auto_compress",
    "CompressedModel",
    "CompressionResult",
    "Dataset",
    "DeepshrinkError",
    "FormatError",
    "InputSpec",
    "Limits",
    "Recipe",
    "TrainConfig",
    "build_model",
    "builtin_recipes",
    "compress",
    "evaluate",
    "export",
    "fit",
    "info",
    "load",
    "load_dataset",
    "load_recipe",
    "load_weights",
    "pack_model",
    "save_model",
    "save_weights",
    "to_onnx",
    "trace",
]
