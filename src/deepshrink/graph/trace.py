"""Turn a ``torch.nn.Module`` into a :class:`~deepshrink.graph.ir.Graph` with ``torch.fx``.

Which modules, functions and tensor methods become which op, and how their attributes are
read, is each op's business (:mod:`deepshrink.graph.ops`); this module walks the ``torch.fx``
graph, names the nodes, follows the values that are not tensors (``x.size(k)``, ``x.shape[k]``,
``x.dtype``, ``x.device``) to the ops that read them, and collects every operation the format
cannot store, so one error lists them all.

A model whose ``forward`` takes one tensor gets one float32 input named ``"input"``. A model
taking several tensors gets one input per argument, named after it; their dtypes (and per-sample
shapes) come from ``trace(model, inputs=...)``: :class:`~deepshrink.graph.ir.GraphInput`
descriptions or example batches (``trace(model, inputs=(input_ids, attention_mask))``).
Dtypes are checked node by node while tracing, so an integer input reaching an op that computes
on floats is one of the problems listed.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx
from torch import nn

from deepshrink.errors import InvalidHeader, UnsupportedOperationError
from deepshrink.graph.ir import INPUT, SINGLE_INPUT, Graph, GraphInput, Node
from deepshrink.graph.ops import Call, op_for_function, op_for_method, op_for_module, supported_forms
from deepshrink.graph.ops.base import TORCH_DTYPES

_SAFE = re.compile(r"[^A-Za-z0-9_.:/\-]")


def _describe(fx_node: torch.fx.Node, modules: dict[str, nn.Module]) -> str:
    """Where an fx node comes from, as a user recognises it."""
    if fx_node.op == "call_module":
        return f"module {fx_node.target!r} ({type(modules[fx_node.target]).__name__})"
    if fx_node.op == "call_function":
        return f"function {getattr(fx_node.target, '__name__', str(fx_node.target))!r} at node {fx_node.name!r}"
    if fx_node.op == "call_method":
        return f"method {fx_node.target!r} at node {fx_node.name!r}"
    return f"{fx_node.op} {str(fx_node.target)!r} at node {fx_node.name!r}"


def _graph_inputs(placeholders: list[torch.fx.Node], inputs: Sequence[Any] | None) -> tuple[GraphInput, ...]:
    """The graph's inputs from the forward's arguments and the caller's descriptions."""
    if inputs is None:
        return SINGLE_INPUT if len(placeholders) == 1 else tuple(GraphInput(str(p.target)) for p in placeholders)
    if isinstance(inputs, (GraphInput, torch.Tensor)):
        inputs = (inputs,)
    if len(inputs) != len(placeholders):
        raise UnsupportedOperationError(
            f"the model's forward takes {len(placeholders)} input(s) {[p.target for p in placeholders]}; "
            f"{len(inputs)} description(s) were given"
        )
    out = []
    for p, d in zip(placeholders, inputs):
        name = INPUT if len(placeholders) == 1 else str(p.target)
        try:
            if isinstance(d, torch.Tensor):
                if d.dtype not in TORCH_DTYPES or d.ndim < 2:
                    raise UnsupportedOperationError(
                        f"example input {name!r} must be a batch (N, ...) of one of {list(TORCH_DTYPES)}, "
                        f"got {d.dtype} of shape {tuple(d.shape)}"
                    )
                d = GraphInput(name, TORCH_DTYPES[d.dtype], tuple(d.shape[1:]))
            elif not isinstance(d, GraphInput):
                raise UnsupportedOperationError(f"input {name!r}: expected a GraphInput or an example tensor, got {type(d).__name__}")
        except InvalidHeader as exc:
            raise UnsupportedOperationError(str(exc)) from None
        out.append(d)
    return tuple(out)


def trace(model: nn.Module, inputs: Sequence[GraphInput | torch.Tensor] | None = None) -> Graph:
    """Trace ``model`` into a :class:`Graph`. ``inputs`` describes the forward's tensors in
    order (each a :class:`GraphInput` or an example batch); without it every input is float32
    of undeclared shape. Raises :class:`UnsupportedOperationError` listing every operation the
    format cannot store, each with its module path or node name."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for untraceable control flow
        raise UnsupportedOperationError(f"torch.fx could not trace {type(model).__name__}: {exc}") from exc
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if not placeholders:
        raise UnsupportedOperationError(f"{type(model).__name__}.forward takes no tensor")
    graph_inputs = _graph_inputs(placeholders, inputs)
    modules = dict(gm.named_modules())
    names: dict[torch.fx.Node, str] = {}
    dtypes: dict[str, str] = {i.name: i.dtype for i in graph_inputs}
    sizes: dict[torch.fx.Node, tuple[torch.fx.Node, int]] = {}  # x.size(k), x.shape[k]: (x, k)
    size_tuples: dict[torch.fx.Node, torch.fx.Node] = {}  # x.size(), x.shape: x
    dtype_refs: dict[torch.fx.Node, torch.fx.Node] = {}  # x.dtype: x
    batch_free: set[torch.fx.Node] = set()  # values PyTorch holds without the batch dimension
    tuples: dict[torch.fx.Node, int] = {}  # a module returning a tuple: the element the op computes
    unavailable: dict[torch.fx.Node, str] = {}  # the other elements: a problem where used
    nodes: list[Node] = []
    problems: list[str] = []
    outputs: tuple[str, ...] = ()
    result: Any = ()
    used: set[str] = set(dtypes)

    def fresh(base: str) -> str:
        base = _SAFE.sub("_", base)[:180] or "node"
        cand, k = base, 1
        while cand in used:
            k += 1
            cand = f"{base}_{k}"
        used.add(cand)
        return cand

    def ref(arg: Any) -> str:
        if isinstance(arg, torch.fx.Node) and arg in tuples:
            raise UnsupportedOperationError(f"the whole tuple {_describe(arg, modules)} returns is used; only "
                                            f"element {tuples[arg]} is stored")
        if isinstance(arg, torch.fx.Node) and arg in names:
            return names[arg]
        if isinstance(arg, torch.fx.Node) and arg in unavailable:
            raise UnsupportedOperationError(f"uses {unavailable[arg]}, which is not stored")
        if isinstance(arg, torch.fx.Node) and (arg in sizes or arg in size_tuples):
            raise UnsupportedOperationError("a size (x.size(k), x.shape) is used as a tensor; sizes may only shape "
                                            "view/reshape/expand")
        raise UnsupportedOperationError(f"argument {arg!r} is not a tensor computed by the network")

    def dtype_of(arg: Any) -> str | None:
        if isinstance(arg, torch.dtype):
            return TORCH_DTYPES.get(arg)
        if arg in dtype_refs:
            arg = dtype_refs[arg]
        return dtypes.get(names.get(arg, "")) if isinstance(arg, torch.fx.Node) else None

    for fx_node in gm.graph.nodes:
        kind, target, args = fx_node.op, fx_node.target, fx_node.args
        call = Call(args, fx_node.kwargs, target if isinstance(target, str) else getattr(target, "__name__", ""), lambda v: sizes.get(v) if isinstance(v, torch.fx.Node) else None,
                    lambda v: size_tuples.get(v) if isinstance(v, torch.fx.Node) else None, dtype_of)
        try:
            if kind == "placeholder":
                names[fx_node] = graph_inputs[placeholders.index(fx_node)].name
                continue
            if kind == "output":
                result = args[0]
                outputs = tuple(ref(r) for r in result) if isinstance(result, (tuple, list)) else (ref(result),)
                continue
            if kind == "call_method" and target == "size":
                dim = call.arg(1, "dim")
                if dim is None:
                    size_tuples[fx_node] = args[0]
                elif isinstance(dim, int):
                    sizes[fx_node] = (args[0], dim)
                else:
                    raise UnsupportedOperationError("x.size(dim) needs an integer dim")
                continue
            if kind == "call_function" and target is getattr:
                if args[1] == "shape":
                    size_tuples[fx_node] = args[0]
                elif args[1] == "dtype":
                    dtype_refs[fx_node] = args[0]
                elif args[1] != "device":  # a device only ever reaches x.to(device) and arange(device=)
                    raise UnsupportedOperationError(f"attribute {args[1]!r} of a tensor")
                continue
            if kind == "call_function" and target is operator.getitem and args[0] in size_tuples:
                if not isinstance(args[1], int):
                    raise UnsupportedOperationError("only single sizes x.shape[k] can be taken from a shape")
                sizes[fx_node] = (size_tuples[args[0]], args[1])
                continue
            if kind == "call_function" and target is operator.getitem and args[0] in tuples:
                if args[1] != tuples[args[0]]:  # e.g. the attention weights: a problem only where used
                    unavailable[fx_node] = f"element {args[1]!r} of the tuple {_describe(args[0], modules)} returns"
                    continue
                names[fx_node] = names[args[0]]
                continue
            if kind == "get_attr":
                names[fx_node] = fresh(fx_node.name)  # its users are not problems of their own
                if str(target).startswith("_tensor_constant"):
                    raise UnsupportedOperationError(
                        "a constant tensor made in forward() (torch.arange(5), torch.tensor(...)); positions are "
                        "supported as torch.arange(x.size(k))")
                raise UnsupportedOperationError(
                    "parameters and buffers used directly in forward() are not supported; wrap them in modules "
                    "(nn.Linear, nn.Conv2d, nn.Embedding, ...)")
            if kind == "call_module":
                mod = modules[target]
                op = op_for_module(mod)
                name = fresh(str(target) or fx_node.name)
            else:
                op = op_for_function(target) if kind == "call_function" else op_for_method(target)
                name = fresh(fx_node.name)
            names[fx_node] = name  # later nodes can refer to it even if it turns out unsupported
            if op is None:
                raise UnsupportedOperationError("no op of the graph format")
            if kind == "call_module":
                tensors, attrs = op.from_module_call(mod, call)
                params = {role: f"{target}.{local}" for role, local in op.module_params(mod).items()}
            else:
                (tensors, attrs), params = op.from_call(call), {}
            op, attrs = op.resolve(attrs)
            free = [t for t in tensors if isinstance(t, torch.fx.Node) and t in batch_free]
            if free and op.gives_batch(attrs):  # arange(L)[None]: the graph's value has the batch already
                names[fx_node] = names[free[0]]
                continue
            if free and (op.batch_free is None or op.batch_free == "keep" and len(free) < len(tensors)):
                raise UnsupportedOperationError(
                    f"op {op.name} on a tensor without the batch dimension ({_describe(free[0], modules)}); such "
                    "values may reach embeddings, layer norms, casts, arithmetic and x.unsqueeze(0) / x[None]")
            try:
                attrs = op.check_attrs(attrs)
            except ValueError as exc:
                raise UnsupportedOperationError(str(exc)) from None
            node = Node(name, op.name, tuple(ref(t) for t in tensors), attrs, params)
            if all(x in dtypes for x in node.inputs):  # else an input is itself a listed problem
                try:
                    dtypes[name] = op.dtype(attrs, [dtypes[x] for x in node.inputs])
                except ValueError as exc:
                    given = ", ".join(f"{x!r} ({dtypes[x]})" for x in node.inputs)
                    hint = "; declare the model's input dtypes with trace(model, inputs=...)" if len(graph_inputs) > 1 else ""
                    raise UnsupportedOperationError(f"{exc} (inputs {given}){hint}") from None
            nodes.append(node)
            if op.batch_free == "make" or free and (op.batch_free == "keep" or len(free) == len(tensors)):
                batch_free.add(fx_node)
            if op.tuple_output is not None:
                tuples[fx_node] = op.tuple_output
        except UnsupportedOperationError as exc:
            problems.append(f"{_describe(fx_node, modules)}: {exc}")
        except (TypeError, ValueError, IndexError, AttributeError) as exc:
            # an op met arguments it cannot read, e.g. a size computed at run time (x.dim() - 1)
            problems.append(f"{_describe(fx_node, modules)}: arguments it cannot store ({exc})")
    if problems:
        raise UnsupportedOperationError(
            f"{type(model).__name__} uses {len(problems)} operation(s) the deepshrink graph format cannot "
            "store:\n" + "\n".join(f"  - {p}" for p in problems) + f"\n{supported_forms()}",
            problems,
        )
    if any(r in batch_free for r in (result if isinstance(result, (tuple, list)) else (result,))):
        raise UnsupportedOperationError("the model returns a tensor without the batch dimension")
    if not outputs or any(o in dtypes and o in {i.name for i in graph_inputs} for o in outputs):
        raise UnsupportedOperationError("the model returns one of its inputs unchanged, or nothing")
    try:
        graph = Graph(tuple(nodes), outputs[0] if len(outputs) == 1 else outputs, graph_inputs)
        if all(i.shape is not None for i in graph_inputs):  # shapes known: check them now, not when packing
            graph.plan(None, {p: tuple(functools.reduce(getattr, p.split("."), model).shape) for p in graph.param_names})
    except InvalidHeader as exc:
        raise UnsupportedOperationError(f"traced graph is not storable: {exc}") from exc
    return graph
