"""Turn a ``torch.nn.Module`` into a :class:`~deepshrink.graph.ir.Graph` with ``torch.fx``.

Which modules, functions and tensor methods become which op, and how their attributes are
read, is each op's business (:mod:`deepshrink.graph.ops`); this module walks the ``torch.fx``
graph, names the nodes and collects every operation the format cannot store.
"""

from __future__ import annotations

import operator
import re
from typing import Any

import torch
import torch.fx
from torch import nn

from deepshrink.errors import InvalidHeader, UnsupportedOperationError
from deepshrink.graph.ir import INPUT, Graph, Node
from deepshrink.graph.ops import Call, Op, op_for_function, op_for_method, op_for_module, supported_forms

_SAFE = re.compile(r"[^A-Za-z0-9_.:/\-]")


def _module_params(op: Op, mod: nn.Module, target: str) -> dict[str, str]:
    """The module's parameters and buffers that fill the op's roles: role → state-dict name."""
    prefix = f"{target}." if target else ""
    roles = set(op.params) | set(op.optional_params)
    return {
        role: prefix + role
        for role, value in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False))
        if value is not None and role in roles
    }


def _describe(fx_node: torch.fx.Node, modules: dict[str, nn.Module]) -> str:
    """Where an fx node comes from, as a user recognises it."""
    if fx_node.op == "call_module":
        return f"module {fx_node.target!r} ({type(modules[fx_node.target]).__name__})"
    if fx_node.op == "call_function":
        return f"function {getattr(fx_node.target, '__name__', str(fx_node.target))!r} at node {fx_node.name!r}"
    if fx_node.op == "call_method":
        return f"method {fx_node.target!r} at node {fx_node.name!r}"
    return f"{fx_node.op} {str(fx_node.target)!r} at node {fx_node.name!r}"


def trace(model: nn.Module) -> Graph:
    """Trace ``model`` into a :class:`Graph`. Raises :class:`UnsupportedOperationError` listing
    every operation the format cannot store, each with its module path or node name."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for untraceable control flow
        raise UnsupportedOperationError(f"torch.fx could not trace {type(model).__name__}: {exc}") from exc
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedOperationError(
            f"the model's forward takes {len(placeholders)} inputs; deepshrink stores networks with one input"
        )
    modules = dict(gm.named_modules())
    names: dict[torch.fx.Node, str] = {}
    sizes: set[torch.fx.Node] = set()  # values of x.size(0): the batch size
    nodes: list[Node] = []
    problems: list[str] = []
    output: str | None = None
    used: set[str] = {INPUT}

    def fresh(base: str) -> str:
        base = _SAFE.sub("_", base)[:180] or "node"
        cand, k = base, 1
        while cand in used:
            k += 1
            cand = f"{base}_{k}"
        used.add(cand)
        return cand

    def ref(arg: Any) -> str:
        if isinstance(arg, torch.fx.Node) and arg in names:
            return names[arg]
        raise UnsupportedOperationError(f"argument {arg!r} is not a tensor computed by the network")

    for fx_node in gm.graph.nodes:
        kind, target = fx_node.op, fx_node.target
        call = Call(fx_node.args, fx_node.kwargs, sizes.__contains__)
        try:
            if kind == "placeholder":
                names[fx_node] = INPUT
                continue
            if kind == "output":
                output = ref(fx_node.args[0])
                continue
            if kind == "call_method" and target == "size":
                if call.arg(1, "dim") != 0:
                    raise UnsupportedOperationError("only x.size(0) is supported")
                sizes.add(fx_node)
                continue
            if kind == "call_function" and target is operator.getitem and fx_node.args[0] in sizes:
                continue
            if kind == "call_module":
                mod = modules[target]
                op = op_for_module(mod)
                name = fresh(str(target) or fx_node.name)
            elif kind in ("call_function", "call_method"):
                op = op_for_function(target) if kind == "call_function" else op_for_method(target)
                name = fresh(fx_node.name)
            else:
                raise UnsupportedOperationError(
                    "parameters used directly in forward() are not supported; wrap them in nn.Linear / "
                    "nn.Conv2d modules"
                )
            names[fx_node] = name  # later nodes can refer to it even if it turns out unsupported
            if op is None:
                raise UnsupportedOperationError("no op of the graph format")
            if kind == "call_module":
                tensors, attrs, params = (fx_node.args[0],), op.from_module(mod), _module_params(op, mod, target)
            else:
                (tensors, attrs), params = op.from_call(call), {}
            try:
                attrs = op.check_attrs(attrs)
            except ValueError as exc:
                raise UnsupportedOperationError(str(exc)) from None
            nodes.append(Node(name, op.name, tuple(ref(t) for t in tensors), attrs, params))
        except UnsupportedOperationError as exc:
            problems.append(f"{_describe(fx_node, modules)}: {exc}")
        except (TypeError, ValueError, IndexError) as exc:
            # an op met arguments it cannot read, e.g. a size computed at run time (x.dim() - 1)
            problems.append(f"{_describe(fx_node, modules)}: arguments it cannot store ({exc})")
    if problems:
        raise UnsupportedOperationError(
            f"{type(model).__name__} uses {len(problems)} operation(s) the deepshrink graph format cannot "
            "store:\n" + "\n".join(f"  - {p}" for p in problems) + f"\n{supported_forms()}",
            problems,
        )
    if output is None or output == INPUT:
        raise UnsupportedOperationError("the model returns its input unchanged or returns nothing")
    try:
        return Graph(tuple(nodes), output)
    except InvalidHeader as exc:
        raise UnsupportedOperationError(f"traced graph is not storable: {exc}") from exc
