"""Load a deepshrink file and run inference, with nothing but the file."""

from deepshrink.runtime.model import CompressedModel, load

__all__ = ["CompressedModel", "load"]
