"""Every operation of the graph format, one class each (see :mod:`deepshrink.graph.ops.base`).

Importing this package registers the ops of its modules in :data:`OPS`.
"""

from deepshrink.graph.ops import activations, arith, attention, layers, pooling, tensor  # noqa: F401  (registers the ops)
from deepshrink.graph.ops.base import (
    OPS,
    Call,
    Channels,
    OnnxGraph,
    Op,
    Shape,
    op_for_function,
    op_for_method,
    op_for_module,
    register,
    supported_forms,
)

__all__ = [
    "OPS", "Call", "Channels", "OnnxGraph", "Op", "Shape", "op_for_function", "op_for_method", "op_for_module", "register",
    "supported_forms",
]
