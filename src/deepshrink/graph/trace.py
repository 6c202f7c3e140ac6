"""Turn a ``torch.nn.Module`` into a :class:`~deepshrink.graph.ir.Graph` with ``torch.fx``."""

from __future__ import annotations

import operator
import re
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from deepshrink.errors import InvalidHeader, UnsupportedOperationError
from deepshrink.graph.ir import INPUT, Graph, Node

_SAFE = re.compile(r"[^A-Za-z0-9_.:/\-]")


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


def _module_node(name: str, mod: nn.Module, target: str, inputs: tuple[str, ...]) -> Node:
    prefix = f"{target}." if target else ""
    params = {
        role: prefix + role
        for role, value in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False))
        if value is not None and role in {"weight", "bias", "running_mean", "running_var"}
    }
    if isinstance(mod, nn.Linear):
        return Node(name, "linear", inputs, {}, params)
    if isinstance(mod, nn.Conv2d):
        if isinstance(mod.padding, str) or mod.padding_mode != "zeros":
            raise UnsupportedOperationError(
                f"{target}: Conv2d with padding={mod.padding!r}, padding_mode={mod.padding_mode!r}; "
                "only explicit integer zero padding is supported"
            )
        attrs = {
            "stride": _pair(mod.stride),
            "padding": _pair(mod.padding),
            "dilation": _pair(mod.dilation),
            "groups": int(mod.groups),
        }
        return Node(name, "conv2d", inputs, attrs, params)
    if isinstance(mod, nn.ReLU):
        return Node(name, "relu", inputs)
    if isinstance(mod, nn.Tanh):
        return Node(name, "tanh", inputs)
    if isinstance(mod, nn.Sigmoid):
        return Node(name, "sigmoid", inputs)
    if isinstance(mod, nn.LeakyReLU):
        return Node(name, "leaky_relu", inputs, {"negative_slope": float(mod.negative_slope)})
    if isinstance(mod, (nn.Dropout, nn.Identity)):
        return Node(name, "identity", inputs)
    if isinstance(mod, nn.MaxPool2d):
        if _pair(mod.dilation) != [1, 1] or mod.return_indices:
            raise UnsupportedOperationError(f"{target}: MaxPool2d with dilation or return_indices")
        kernel = _pair(mod.kernel_size)
        stride = _pair(mod.stride if mod.stride is not None else mod.kernel_size)
        attrs = {"kernel": kernel, "stride": stride, "padding": _pair(mod.padding), "ceil_mode": bool(mod.ceil_mode)}
        return Node(name, "max_pool2d", inputs, attrs)
    if isinstance(mod, nn.AvgPool2d):
        if mod.divisor_override is not None:
            raise UnsupportedOperationError(f"{target}: AvgPool2d with divisor_override")
        kernel = _pair(mod.kernel_size)
        stride = _pair(mod.stride if mod.stride is not None else mod.kernel_size)
        attrs = {
            "kernel": kernel,
            "stride": stride,
            "padding": _pair(mod.padding),
            "ceil_mode": bool(mod.ceil_mode),
            "count_include_pad": bool(mod.count_include_pad),
        }
        return Node(name, "avg_pool2d", inputs, attrs)
    if isinstance(mod, nn.AdaptiveAvgPool2d) and _pair(mod.output_size) == [1, 1]:
        return Node(name, "global_avg_pool2d", inputs)
    if isinstance(mod, nn.Flatten):
        if mod.end_dim != -1:
            raise UnsupportedOperationError(f"{target}: Flatten with end_dim={mod.end_dim}; only -1 is supported")
        return Node(name, "flatten", inputs, {"start_dim": int(mod.start_dim)})
    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if not mod.track_running_stats:
            raise UnsupportedOperationError(f"{target}: BatchNorm without running statistics")
        return Node(name, "batch_norm", inputs, {"eps": float(mod.eps)}, params)
    if isinstance(mod, nn.Softmax):
        return Node(name, "softmax", inputs, {"dim": int(mod.dim if mod.dim is not None else -1)})
    if isinstance(mod, nn.LogSoftmax):
        return Node(name, "log_softmax", inputs, {"dim": int(mod.dim if mod.dim is not None else -1)})
    raise UnsupportedOperationError(
        f"module {target!r} of type {type(mod).__name__} is not supported by the deepshrink graph "
        "format; supported: Linear, Conv2d, ReLU, Tanh, Sigmoid, LeakyReLU, Dropout, Identity, "
        "MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten, BatchNorm1d/2d, Softmax, LogSoftmax"
    )


_UNARY_FUNCS = {
    F.relu: "relu",
    torch.relu: "relu",
    torch.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    F.dropout: "identity",
}
_UNARY_METHODS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid"}


def trace(model: nn.Module) -> Graph:
    """Trace ``model`` into a :class:`Graph`. Raises :class:`UnsupportedOperationError` naming
    the first operation the format cannot store."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for untraceable control flow
        raise UnsupportedOperationError(f"torch.fx could not trace {type(model).__name__}: {exc}") from exc
    modules = dict(gm.named_modules())
    names: dict[torch.fx.Node, str] = {}
    sizes: dict[torch.fx.Node, tuple[torch.fx.Node, int]] = {}
    nodes: list[Node] = []
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

    def ref(arg: Any, where: str) -> str:
        if isinstance(arg, torch.fx.Node) and arg in names:
            return names[arg]
        raise UnsupportedOperationError(f"{where}: argument {arg!r} is not a tensor computed by the network")

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedOperationError(
            f"the model's forward takes {len(placeholders)} inputs; deepshrink stores networks with one input"
        )
    for fx_node in gm.graph.nodes:
        where = f"{fx_node.op} {fx_node.target!s}"
        if fx_node.op == "placeholder":
            names[fx_node] = INPUT
        elif fx_node.op == "call_module":
            mod = modules[fx_node.target]
            name = fresh(str(fx_node.target) or fx_node.name)
            nodes.append(_module_node(name, mod, str(fx_node.target), (ref(fx_node.args[0], where),)))
            names[fx_node] = name
        elif fx_node.op == "call_function":
            fn = fx_node.target
            name = fresh(fx_node.name)
            if fn in _UNARY_FUNCS:
                nodes.append(Node(name, _UNARY_FUNCS[fn], (ref(fx_node.args[0], where),)))
            elif fn is torch.flatten:
                start = fx_node.args[1] if len(fx_node.args) > 1 else fx_node.kwargs.get("start_dim", 0)
                end = fx_node.args[2] if len(fx_node.args) > 2 else fx_node.kwargs.get("end_dim", -1)
                if end != -1:
                    raise UnsupportedOperationError(f"{where}: flatten with end_dim={end}")
                nodes.append(Node(name, "flatten", (ref(fx_node.args[0], where),), {"start_dim": int(start)}))
            elif fn in (operator.add, torch.add) and len(fx_node.args) == 2 and not fx_node.kwargs:
                a, b = fx_node.args
                nodes.append(Node(name, "add", (ref(a, where), ref(b, where))))
            elif fn in (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax):
                dim = fx_node.args[1] if len(fx_node.args) > 1 else fx_node.kwargs.get("dim")
                if not isinstance(dim, int):
                    raise UnsupportedOperationError(f"{where}: softmax needs an explicit integer dim")
                op = "softmax" if fn in (F.softmax, torch.softmax) else "log_softmax"
                nodes.append(Node(name, op, (ref(fx_node.args[0], where),), {"dim": dim}))
            elif fn is operator.getitem and fx_node.args[0] in sizes:
                continue
            else:
                raise UnsupportedOperationError(
                    f"function {getattr(fn, '__name__', fn)!r} ({fx_node.name}) is not supported by the "
                    "deepshrink graph format; use modules (nn.ReLU, nn.Flatten, ...) or relu/flatten/view"
                )
            names[fx_node] = name
        elif fx_node.op == "call_method":
            method = fx_node.target
            if method == "size":
                dim = fx_node.args[1] if len(fx_node.args) > 1 else fx_node.kwargs.get("dim")
                if dim not in (0,):
                    raise UnsupportedOperationError(f"{where}: only x.size(0) is supported")
                sizes[fx_node] = (fx_node.args[0], 0)
                continue
            name = fresh(fx_node.name)
            src = ref(fx_node.args[0], where)
            if method in _UNARY_METHODS:
                nodes.append(Node(name, _UNARY_METHODS[method], (src,)))
            elif method == "flatten":
                start = fx_node.args[1] if len(fx_node.args) > 1 else fx_node.kwargs.get("start_dim", 0)
                nodes.append(Node(name, "flatten", (src,), {"start_dim": int(start)}))
            elif method in ("view", "reshape"):
                dims = fx_node.args[1:]
                if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
                    dims = tuple(dims[0])
                shape = []
                for k, d in enumerate(dims):
                    if isinstance(d, torch.fx.Node) and d in sizes and k == 0:
                        shape.append(0)  # copy the batch dimension
                    elif isinstance(d, int):
                        shape.append(d)
                    else:
                        raise UnsupportedOperationError(f"{where}: reshape dims must be ints or x.size(0)")
                try:
                    nodes.append(Node(name, "reshape", (src,), {"shape": shape}))
                except InvalidHeader as exc:
                    raise UnsupportedOperationError(f"{where}: {exc}") from None
            else:
                raise UnsupportedOperationError(f"method {method!r} ({fx_node.name}) is not supported")
            names[fx_node] = name
        elif fx_node.op == "output":
            output = ref(fx_node.args[0], "output")
        else:
            raise UnsupportedOperationError(
                f"{fx_node.op} {fx_node.target}: parameters used directly in forward() are not supported; "
                "wrap them in nn.Linear / nn.Conv2d modules"
            )
    if output is None or output == INPUT:
        raise UnsupportedOperationError("the model returns its input unchanged or returns nothing")
    try:
        return Graph(tuple(nodes), output)
    except InvalidHeader as exc:
        raise UnsupportedOperationError(f"traced graph is not storable: {exc}") from exc
