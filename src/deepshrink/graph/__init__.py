"""The network structure a deepshrink file stores: trace, validate, rebuild."""

from deepshrink.graph.build import GraphNet, build
from deepshrink.graph.ir import INPUT, OPS, Graph, Node, Plan
from deepshrink.graph.trace import trace

__all__ = ["INPUT", "OPS", "Graph", "GraphNet", "Node", "Plan", "build", "trace"]
