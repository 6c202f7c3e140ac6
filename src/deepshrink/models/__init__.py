"""Model zoo and model loading."""

from deepshrink.models.loading import build_model, load_weights, num_classes, save_weights
from deepshrink.models.zoo import ZOO, create, lenet_5, lenet_300_100

__all__ = ["ZOO", "build_model", "create", "lenet_5", "lenet_300_100", "load_weights", "num_classes", "save_weights"]
