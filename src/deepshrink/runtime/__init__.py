"""Load a deepshrink file and run inference, with nothing but the file.

``load(path)`` runs dense PyTorch; ``load(path, mode="compressed")`` runs each linear and conv
layer from its compressed weight with the kernel measured fastest for it at load
(:mod:`deepshrink.runtime.kernels`, :mod:`deepshrink.runtime.select`).
"""

from deepshrink.runtime.compressed import CompressedNet
from deepshrink.runtime.kernels import KERNELS
from deepshrink.runtime.model import CompressedModel, load

__all__ = ["KERNELS", "CompressedModel", "CompressedNet", "load"]
