"""The network structure a deepshrink file stores: the op registry, trace, validate, rebuild."""

from deepshrink.graph.build import GraphNet, build
from deepshrink.graph.ir import INPUT, Graph, Node, Plan
from deepshrink.graph.ops import OPS, Op, register
from deepshrink.graph.trace import trace

__all__ = ["INPUT", "OPS", "Graph", "GraphNet", "Node", "Op", "Plan", "build", "register", "trace"]
