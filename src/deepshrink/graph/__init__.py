"""The network structure a deepshrink file stores: the op registry, trace, validate, rebuild."""

from deepshrink.graph.build import GraphNet, build
from deepshrink.graph.examples import example_inputs, index_bounds
from deepshrink.graph.fold import fold_batchnorm, fold_batchnorm_modules
from deepshrink.graph.ir import INPUT, Graph, GraphInput, Node, Plan
from deepshrink.graph.ops import OPS, Op, register
from deepshrink.graph.trace import trace

__all__ = ["INPUT", "OPS", "Graph", "GraphInput", "GraphNet", "Node", "Op", "Plan", "build", "example_inputs",
           "fold_batchnorm", "fold_batchnorm_modules", "index_bounds", "register", "trace"]
