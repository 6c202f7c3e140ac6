"""Ops that move or select values without computing on them: flatten, reshape/view, transpose,
permute, unsqueeze, squeeze, indexing (``x[:, None, 0, 1:]``), cat, expand_as; and cast, which
changes only the dtype. They keep the batch dimension where it is: an op that would move,
merge or index it is refused by its shape rule.

Sizes known only when the network runs are recorded symbolically: ``x.view(x.size(0), x.size(1),
12, 64)`` stores "copy dimension k of tensor j" (the tensor becomes an extra input of the node),
so the graph runs on any batch and is planned in integer arithmetic.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np
import torch
from torch import nn

from deepshrink.errors import UnsupportedOperationError
from deepshrink.graph.ops.base import (
    DTYPES, ONNX_DTYPES, SAME, TORCH_DTYPES, Channels, Mover, Op, axis, broadcast, dim_index, fmt, int_in, nullable, one_of,
    register, scalar,
)



def _axis(d: int, rank: int, what: str) -> int:
    """Dimension ``d`` of a tensor of full rank ``rank`` (with the batch), as PyTorch wraps it."""
    if not -rank <= d < rank:
        raise ValueError(f"{what} {d} is out of range for a tensor of {rank} dimensions")
    return d % rank


@register
class Flatten(Mover):
    """Dimensions ``start_dim`` to the last merged into one."""

    name = "flatten"
    attrs = {"start_dim": int_in(0, 7)}
    modules, functions, methods = (nn.Flatten,), (torch.flatten,), ("flatten",)

    def shape(self, a, ins, ps):
        x, start = ins[0], a["start_dim"]
        if not 1 <= start <= len(x):
            raise ValueError(f"start_dim={start} must name a non-batch dimension of the input {fmt(x)}")
        return x[: start - 1] + (math.prod(x[start - 1 :]),)

    def from_module(self, mod):
        if mod.end_dim != -1:
            raise UnsupportedOperationError(f"Flatten with end_dim={mod.end_dim}; only -1 is supported")
        return {"start_dim": int(mod.start_dim)}

    def from_call(self, call):
        end = call.arg(2, "end_dim", -1)
        if end != -1:
            raise UnsupportedOperationError(f"flatten with end_dim={end}; only -1 is supported")
        return (call.args[0],), {"start_dim": int(call.arg(1, "start_dim", 0))}

    def forward(self, a, xs, p):
        return torch.flatten(xs[0], a["start_dim"])

    def channels(self, a, ins, out):
        return Channels("flatten", axis=a["start_dim"] - 1)

    def to_onnx(self, node, xs, shapes, g):
        start = node.attrs["start_dim"]
        shape = [-1] if start == 0 else [0] * start + [-1]
        g.node("Reshape", [xs[0], g.init(f"{node.name}/shape", np.array(shape, np.int64))], node.name)

    def to_c(self, node, ins, out, w):
        w.alias()  # the same values in the same order: only the shape changes


def _shape_entries(v: Any) -> list[Any]:
    """1 to 8 entries, each an integer ≥ -1 (at most one -1) or ``[j, k]``: dimension ``k`` of
    the node's input ``j``."""
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= 8:
        raise ValueError(f"expected a list of 1 to 8 entries, got {v!r}")
    out: list[Any] = []
    for d in v:
        if isinstance(d, (list, tuple)):
            if len(d) != 2:
                raise ValueError(f"a copied size is [input, dim], got {d!r}")
            out.append([int_in(0, 8)(d[0]), int_in(-9, 8)(d[1])])
        else:
            out.append(int_in(-1)(d))
    if out.count(-1) > 1:
        raise ValueError(f"at most one -1 allowed in a shape, got {v!r}")
    return out


@register
class Reshape(Mover):
    """A new shape holding the same values. An entry is a size, -1 (inferred), 0 (the input's
    dimension at the same position) or ``[j, k]`` (dimension ``k`` of input ``j``: a size read
    when the network runs, ``x.size(k)``). The first entry keeps the batch dimension (0, -1 or
    ``[j, 0]``). Inputs after the first only lend their sizes."""

    name = "reshape"
    attrs = {"shape": _shape_entries}
    max_inputs = 9
    methods = ("view", "reshape")
    functions = (torch.reshape,)

    def dtype(self, a, ins):
        return ins[0]

    def shape(self, a, ins, ps):
        x, target = ins[0], a["shape"]
        refs = {d[0] for d in target if isinstance(d, list)}
        if refs - set(range(len(ins))) or set(range(1, len(ins))) - refs:
            raise ValueError(f"shape {target} must refer to exactly the node's {len(ins)} inputs")
        first = target[0]
        if not (first in (0, -1) or isinstance(first, list) and _axis(first[1], len(ins[first[0]]) + 1, "dim") == 0):
            raise ValueError(f"shape {target} must keep the batch dimension (0, -1 or [j, 0] first)")
        dims = []
        for i, d in enumerate(target[1:], 1):
            if isinstance(d, list):
                src = ins[d[0]]
                k = _axis(d[1], len(src) + 1, f"entry {i} copies dim")
                if k == 0:
                    raise ValueError(f"shape {target}: entry {i} copies the batch size into a per-sample dimension")
                dims.append(src[k - 1])
            elif d == 0:
                if i > len(x):
                    raise ValueError(f"shape {target}: 0 copies dimension {i}, which the input {fmt(x)} lacks")
                dims.append(x[i - 1])
            else:
                dims.append(d)
        n, known = math.prod(x), math.prod(d for d in dims if d != -1)
        if -1 in dims and known and n % known == 0:
            dims[dims.index(-1)] = n // known
        if math.prod(dims) != n or -1 in dims:
            raise ValueError(f"shape {target} does not hold the {n} values per sample of the input {fmt(x)}")
        return tuple(dims)

    def from_call(self, call):
        x = call.args[0]
        dims = call.args[1:] if call.args[1:] else call.kwargs.get("shape", ())
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        sources, shape = [x], []
        for i, d in enumerate(dims):
            size = call.size_of(d)
            if isinstance(d, int) and not isinstance(d, bool):
                shape.append(d)
            elif size is None:
                raise UnsupportedOperationError("reshape sizes must be integers or x.size(k) / x.shape[k]")
            elif size[0] is x and size[1] == i:
                shape.append(0)  # the input's own dimension at this position (the batch first)
            else:
                if size[0] not in sources:
                    sources.append(size[0])
                shape.append([sources.index(size[0]), size[1]])
        return tuple(sources), {"shape": shape}

    def channels(self, a, ins, out):
        return Channels("mix", reason="a reshape other than flatten moves channels to other positions")

    def forward(self, a, xs, p):
        x = xs[0]
        sizes = [xs[d[0]].shape[d[1]] if isinstance(d, list) else x.shape[i] if d == 0 else d
                 for i, d in enumerate(a["shape"])]
        return x.reshape(sizes)

    def to_onnx(self, node, xs, shapes, g):
        out = self.shape(node.attrs, shapes, {})  # every per-sample size is known: only the batch is copied
        shape = np.array([0, *out], np.int64)
        g.node("Reshape", [xs[0], g.init(f"{node.name}/shape", shape)], node.name)

    def to_c(self, node, ins, out, w):
        w.alias()  # the same values in the same order: only the shape changes


@register
class Transpose(Mover):
    """Two non-batch dimensions swapped."""

    name = "transpose"
    attrs = {"dims": lambda v: [axis()(d) for d in _two(v)]}
    functions, methods = (torch.transpose,), ("transpose",)

    def perm(self, a, x) -> list[int]:
        i, j = (dim_index(d, x) for d in a["dims"])
        perm = list(range(len(x) + 1))
        perm[i], perm[j] = perm[j], perm[i]
        return perm

    def shape(self, a, ins, ps):
        full = (0, *ins[0])
        return tuple(full[k] for k in self.perm(a, ins[0])[1:])

    def from_call(self, call):
        return (call.args[0],), {"dims": [call.arg(1, "dim0"), call.arg(2, "dim1")]}

    def channels(self, a, ins, out):
        return Channels("mix", reason="a transpose moves the channels to another dimension")

    def forward(self, a, xs, p):
        return xs[0].transpose(*a["dims"])

    def to_onnx(self, node, xs, shapes, g):
        g.node("Transpose", xs, node.name, perm=self.perm(node.attrs, shapes[0]))


def _two(v: Any) -> list[Any]:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError(f"expected a list of 2 dimensions, got {v!r}")
    return list(v)


def _perm(v: Any) -> list[int]:
    if not isinstance(v, (list, tuple)) or not 2 <= len(v) <= 9:
        raise ValueError(f"expected a list of 2 to 9 dimensions, got {v!r}")
    return [int_in(-9, 8)(d) for d in v]


@register
class Permute(Mover):
    """The dimensions reordered; the batch dimension stays first."""

    name = "permute"
    attrs = {"perm": _perm}
    functions, methods = (torch.permute,), ("permute",)

    def full(self, a, x) -> list[int]:
        rank = len(x) + 1
        perm = a["perm"]
        if len(perm) != rank:
            raise ValueError(f"perm {perm} must list all {rank} dimensions of the input {fmt(x)}")
        out = [_axis(d, rank, "perm entry") for d in perm]
        if sorted(out) != list(range(rank)) or out[0] != 0:
            raise ValueError(f"perm {perm} must be a permutation keeping the batch dimension first")
        return out

    def shape(self, a, ins, ps):
        full = (0, *ins[0])
        return tuple(full[k] for k in self.full(a, ins[0])[1:])

    def from_call(self, call):
        dims = call.args[1:] or call.kwargs.get("dims", ())
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = dims[0]
        return (call.args[0],), {"perm": list(dims)}

    def channels(self, a, ins, out):
        return Channels("mix", reason="a permute moves the channels to another dimension")

    def forward(self, a, xs, p):
        return xs[0].permute(a["perm"])

    def to_onnx(self, node, xs, shapes, g):
        g.node("Transpose", xs, node.name, perm=self.full(node.attrs, shapes[0]))


@register
class Unsqueeze(Mover):
    """A dimension of size 1 inserted at ``dim`` (not before the batch)."""

    name = "unsqueeze"
    attrs = {"dim": axis(-10, 9)}
    functions, methods = (torch.unsqueeze,), ("unsqueeze",)

    def gives_batch(self, attrs):
        return attrs.get("dim") == 0

    def axis(self, a, x) -> int:
        k = _axis(a["dim"], len(x) + 2, "dim")
        if k == 0:
            raise ValueError(f"dim={a['dim']} would insert a dimension before the batch of {fmt(x)}")
        return k

    def shape(self, a, ins, ps):
        x, k = ins[0], self.axis(a, ins[0])
        return x[: k - 1] + (1,) + x[k - 1 :]

    def from_call(self, call):
        return (call.args[0],), {"dim": call.arg(1, "dim")}

    def forward(self, a, xs, p):
        return xs[0].unsqueeze(a["dim"])

    def to_onnx(self, node, xs, shapes, g):
        axes = g.init(f"{node.name}/axes", np.array([self.axis(node.attrs, shapes[0])], np.int64))
        g.node("Unsqueeze", [xs[0], axes], node.name)

    def to_c(self, node, ins, out, w):
        w.alias()  # the same values in the same order: only the shape changes


@register
class Squeeze(Mover):
    """Dimension ``dim`` removed if its size is 1 (else the input unchanged, as in PyTorch)."""

    name = "squeeze"
    attrs = {"dim": axis()}
    functions, methods = (torch.squeeze,), ("squeeze",)

    def shape(self, a, ins, ps):
        x = ins[0]
        k = dim_index(a["dim"], x)
        return x[: k - 1] + x[k:] if x[k - 1] == 1 else x

    def from_call(self, call):
        dim = call.arg(1, "dim")
        if not isinstance(dim, int):
            raise UnsupportedOperationError("squeeze needs one integer dim (without it, a batch of 1 would be squeezed too)")
        return (call.args[0],), {"dim": dim}

    def forward(self, a, xs, p):
        return xs[0].squeeze(a["dim"])

    def to_onnx(self, node, xs, shapes, g):
        x = shapes[0]
        k = dim_index(node.attrs["dim"], x)
        if x[k - 1] != 1:
            g.node("Identity", xs, node.name)
            return
        g.node("Squeeze", [xs[0], g.init(f"{node.name}/axes", np.array([k], np.int64))], node.name)

    def to_c(self, node, ins, out, w):
        w.alias()  # the same values in the same order: only the shape changes


def _index_items(v: Any) -> list[Any]:
    """1 to 9 index items: ``null`` (a new axis), an integer (one position), ``[start, stop,
    step]`` (a slice; start and stop may be null, step ≥ 1) or ``"..."`` (once)."""
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= 9:
        raise ValueError(f"expected a list of 1 to 9 index items, got {v!r}")
    out: list[Any] = []
    big = 1 << 62
    for item in v:
        if item is None or item == "...":
            out.append(item)
        elif isinstance(item, (list, tuple)):
            if len(item) != 3:
                raise ValueError(f"a slice is [start, stop, step], got {item!r}")
            start, stop = (None if x is None else int_in(-big, big)(x) for x in item[:2])
            out.append([start, stop, int_in(1)(item[2])])
        else:
            out.append(int_in(-big, big)(item))
    if out.count("...") > 1:
        raise ValueError(f"at most one '...' in an index, got {v!r}")
    return out


@register
class Index(Mover):
    """Basic indexing ``x[items]``: slices, single positions, new axes and ``...``; the batch
    dimension is kept whole."""

    name = "index"
    attrs = {"items": _index_items}
    functions = (operator.getitem,)

    def gives_batch(self, attrs):
        items = attrs.get("items", [])
        return bool(items) and items[0] is None and all(i in ("...", [None, None, 1]) for i in items[1:])

    def walk(self, a, x):
        """Per input dimension (with the batch) a ``slice`` or an int, and the output positions
        of the new axes; ``ValueError`` for an index PyTorch would refuse or that touches the batch."""
        items, rank = a["items"], len(x) + 1
        consuming = sum(1 for i in items if i is not None and i != "...")
        if consuming > rank:
            raise ValueError(f"index {items} has {consuming} entries for the {rank} dimensions of {fmt(x)}")
        full = [[None, None, 1]] * (rank - consuming)
        at = items.index("...") if "..." in items else len(items)
        items = items[:at] + full + items[at + 1:]
        per_dim, new_axes, out_pos = [], [], 0
        for item in items:
            if item is None:
                new_axes.append(out_pos)
                out_pos += 1
                continue
            n = (0, *x)[len(per_dim)]
            if isinstance(item, list):
                per_dim.append(slice(*item))
                out_pos += 1
            else:
                if len(per_dim) and not -n <= item < n:
                    raise ValueError(f"index {item} is out of range for a dimension of size {n}")
                per_dim.append(item)
        if per_dim[0] != slice(None, None, 1) or (new_axes and new_axes[0] == 0):
            raise ValueError(f"index {a['items']} must keep the batch dimension whole and first")
        return per_dim, new_axes

    def shape(self, a, ins, ps):
        per_dim, new_axes = self.walk(a, ins[0])
        out = [len(range(*s.indices(n))) for s, n in zip(per_dim[1:], ins[0]) if isinstance(s, slice)]
        for k in new_axes:
            out.insert(k - 1, 1)
        return tuple(out)

    def from_call(self, call):
        index = call.args[1] if isinstance(call.args[1], tuple) else (call.args[1],)
        items = []
        for item in index:
            if item is None or item is Ellipsis:
                items.append(None if item is None else "...")
            elif isinstance(item, slice) and all(v is None or isinstance(v, int) for v in (item.start, item.stop, item.step)):
                items.append([item.start, item.stop, 1 if item.step is None else item.step])
            elif isinstance(item, int) and not isinstance(item, bool):
                items.append(item)
            else:
                raise UnsupportedOperationError(
                    "indexing with tensors, run-time sizes or booleans; only integers, slices, None and ... are supported")
        return (call.args[0],), {"items": items}

    def forward(self, a, xs, p):
        key = tuple(Ellipsis if i == "..." else slice(*i) if isinstance(i, list) else i for i in a["items"])
        return xs[0][key]

    def to_onnx(self, node, xs, shapes, g):
        x, out = xs[0], node.name
        per_dim, new_axes = self.walk(node.attrs, shapes[0])
        starts, ends, axes, steps, drop = [], [], [], [], []
        for k, (s, n) in enumerate(zip(per_dim[1:], shapes[0]), 1):
            if isinstance(s, slice):
                lo, hi, step = s.indices(n)
                if (lo, hi, step) != (0, n, 1):
                    starts, ends, axes, steps = starts + [lo], ends + [max(hi, lo)], axes + [k], steps + [step]
            else:
                starts, ends, axes, steps = starts + [s % n], ends + [s % n + 1], axes + [k], steps + [1]
                drop.append(k)
        if axes:
            consts = [g.init(f"{out}/{k}", np.array(v, np.int64))
                      for k, v in (("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps))]
            x = g.node("Slice", [x, *consts], f"{out}/slice")
        if drop:
            x = g.node("Squeeze", [x, g.init(f"{out}/drop", np.array(drop, np.int64))], f"{out}/squeeze")
        if new_axes:
            x = g.node("Unsqueeze", [x, g.init(f"{out}/new", np.array(new_axes, np.int64))], f"{out}/unsqueeze")
        g.node("Identity", [x], out)


@register
class Cat(Mover):
    """Tensors of one dtype joined along a non-batch dimension ``dim``."""

    name = "cat"
    attrs = {"dim": axis()}
    max_inputs = 64
    functions = (torch.cat, torch.concat)

    def shape(self, a, ins, ps):
        x = ins[0]
        k = dim_index(a["dim"], x)
        for y in ins[1:]:
            if len(y) != len(x) or any(i != j for d, (i, j) in enumerate(zip(x, y), 1) if d != k):
                raise ValueError(f"inputs {fmt(x)} and {fmt(y)} differ outside dim {a['dim']}")
        return x[: k - 1] + (sum(y[k - 1] for y in ins),) + x[k:]

    def from_call(self, call):
        tensors = call.arg(0, "tensors")
        if not isinstance(tensors, (list, tuple)) or not tensors:
            raise UnsupportedOperationError("cat takes a list of tensors")
        return tuple(tensors), {"dim": call.arg(1, "dim", 0)}

    def channels(self, a, ins, out):
        return Channels("mix", reason="cat joins channel spaces (not supported by structured pruning)")

    def forward(self, a, xs, p):
        return torch.cat(xs, a["dim"])

    def to_onnx(self, node, xs, shapes, g):
        g.node("Concat", xs, node.name, axis=dim_index(node.attrs["dim"], shapes[0]))


@register
class ExpandAs(Mover):
    """The first input broadcast to the shape of the second (``x.expand_as(y)``,
    ``x.expand(y.size())``); the second input lends only its shape."""

    name = "expand_as"
    inputs, batch_free = 2, "broadcast"
    methods = ("expand_as", "expand")

    def dtype(self, a, ins):
        return ins[0]

    def shape(self, a, ins, ps):
        x, y = ins
        if len(x) > len(y) or broadcast(x, y) != y:
            raise ValueError(f"{fmt(x)} does not broadcast to {fmt(y)}")
        return y

    def from_call(self, call):
        target = call.args[1] if len(call.args) == 2 and not call.kwargs else None
        if call.name == "expand":
            target = call.shape_of(target)  # x.expand(y.size())
        if target is None:
            raise UnsupportedOperationError("expand is supported as x.expand_as(y) or x.expand(y.size()) / x.expand(y.shape)")
        return (call.args[0], target), {}

    def forward(self, a, xs, p):
        return xs[0].expand_as(xs[1])

    def to_onnx(self, node, xs, shapes, g):
        g.node("Expand", [xs[0], g.node("Shape", [xs[1]], f"{node.name}/shape")], node.name)


_METHOD_DTYPES = {"float": "float32", "long": "int64", "bool": "bool"}


@register
class Cast(Mover):
    """The input converted to ``dtype`` (``x.float()``, ``x.long()``, ``x.bool()``,
    ``x.to(torch.float32)``, ``x.to(y.dtype)``, ``x.type_as(y)``; ``x.to(device)`` keeps the dtype).
    Float to int64 truncates toward zero; anything nonzero becomes True."""

    name, batch_free = "cast", "keep"
    attrs = {"dtype": one_of(*DTYPES)}
    methods = ("float", "long", "bool", "to", "type", "type_as")

    def dtype(self, a, ins):
        return a["dtype"]

    def from_call(self, call):
        x = call.args[0]
        if call.name in _METHOD_DTYPES:
            return (x,), {"dtype": _METHOD_DTYPES[call.name]}
        for v in (*call.args[1:], call.kwargs.get("dtype")):
            if isinstance(v, str) and call.name == "type" or isinstance(v, torch.dtype) and call.dtype_of(v) is None:
                raise UnsupportedOperationError(f"a cast to {v!r}; supported dtypes: {list(DTYPES)}")
            if call.dtype_of(v) is not None:
                return (x,), {"dtype": call.dtype_of(v)}
        dtype = call.dtype_of(x)  # x.to(device): the dtype stays
        if dtype is None:
            raise UnsupportedOperationError("a cast whose target dtype is not known when tracing")
        return (x,), {"dtype": dtype}

    def channels(self, a, ins, out):
        return SAME

    def forward(self, a, xs, p):
        return xs[0].to(_TORCH[a["dtype"]])

    def to_onnx(self, node, xs, shapes, g):
        g.node("Cast", xs, node.name, to=ONNX_DTYPES[node.attrs["dtype"]])

    def to_c(self, node, ins, out, w):
        if node.attrs["dtype"] != "float32":
            raise UnsupportedOperationError(f"a cast to {node.attrs['dtype']}; the engine computes on float32 only")
        w.alias()  # every value the engine holds is float32 already


_TORCH = {name: dtype for dtype, name in TORCH_DTYPES.items()}


@register
class FullLike(Op):
    """A tensor of the input's shape filled with ``value`` (``torch.zeros_like(input_ids)``,
    ``torch.ones_like``, ``torch.full_like``), of ``dtype`` or the input's dtype."""

    name = "full_like"
    attrs = {"value": scalar, "dtype": nullable(one_of(*DTYPES))}
    functions = (torch.zeros_like, torch.ones_like, torch.full_like)

    def dtype(self, a, ins):
        return a["dtype"] or ins[0]

    def from_call(self, call):
        value = {"zeros_like": 0, "ones_like": 1}.get(call.name, call.arg(1, "fill_value"))
        dtype = call.kwargs.get("dtype")
        if not isinstance(value, (int, float)) or dtype is not None and call.dtype_of(dtype) is None:
            raise UnsupportedOperationError(f"{call.name} with value {value!r} and dtype {dtype!r}")
        return (call.args[0],), {"value": value, "dtype": None if dtype is None else call.dtype_of(dtype)}

    def forward(self, a, xs, p):
        dtype = _TORCH[a["dtype"]] if a["dtype"] else xs[0].dtype
        return torch.full_like(xs[0], a["value"], dtype=dtype)

    def to_onnx(self, node, xs, shapes, g):
        dtype = self.dtype(node.attrs, [g.dtype(xs[0])])
        value = g.init(f"{node.name}/value", np.array(node.attrs["value"], _NUMPY[dtype]))
        g.node("Expand", [value, g.node("Shape", xs, f"{node.name}/shape")], node.name)


@register
class Arange(Op):
    """The positions ``0, 1, ..., L - 1`` along dimension ``dim`` of the input, one row per
    sample (int64 ``(N, L)``): ``torch.arange(x.size(1))``, which PyTorch makes without the
    batch dimension and a model then broadcasts over the batch (tracing follows it there)."""

    name = "arange"
    attrs = {"dim": axis()}
    functions, batch_free = (torch.arange,), "make"

    def dtype(self, a, ins):
        return "int64"

    def shape(self, a, ins, ps):
        return (ins[0][dim_index(a["dim"], ins[0]) - 1],)

    def from_call(self, call):
        size = call.size_of(call.args[0]) if len(call.args) == 1 else None
        if size is None or call.kwargs.get("dtype") not in (None, torch.int64):
            raise UnsupportedOperationError("torch.arange is supported as torch.arange(x.size(k)) (int64), the "
                                            "positions along a dimension of a tensor")
        return (size[0],), {"dim": size[1]}

    def forward(self, a, xs, p):
        x = xs[0]
        return torch.arange(x.shape[a["dim"]], device=x.device).expand(x.shape[0], -1)

    def to_onnx(self, node, xs, shapes, g):
        (n,), out = self.shape(node.attrs, shapes, {}), node.name
        rows = g.init(f"{out}/positions", np.arange(n, dtype=np.int64)[None])
        batch = g.node("Slice", [g.node("Shape", xs, f"{out}/xshape"), g.init(f"{out}/0", np.array([0], np.int64)),
                                 g.init(f"{out}/1", np.array([1], np.int64))], f"{out}/batch")
        shape = g.node("Concat", [batch, g.init(f"{out}/n", np.array([n], np.int64))], f"{out}/shape", axis=0)
        g.node("Expand", [rows, shape], out)


_NUMPY = {"float32": np.float32, "int64": np.int64, "bool": np.bool_}
