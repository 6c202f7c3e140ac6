"""Model zoo and model loading."""

from deepshrink.models.checkpoint import load_state, read_safetensors, read_torch_state_dict
from deepshrink.models.loading import build_model, load_weights, num_classes, save_weights
from deepshrink.models.zoo import ZOO, ModelInput, Pretrained, ZooEntry, create, lenet_5, lenet_300_100, load_pretrained

__all__ = [
    "ZOO",
    "ModelInput",
    "Pretrained",
    "ZooEntry",
    "build_model",
    "create",
    "lenet_5",
    "lenet_300_100",
    "load_pretrained",
    "load_state",
    "load_weights",
    "num_classes",
    "read_safetensors",
    "read_torch_state_dict",
    "save_weights",
]
