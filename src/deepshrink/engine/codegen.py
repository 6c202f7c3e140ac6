"""A network's graph and its typed compressed tensors as a C99 engine: ``model.c``, ``model.h``,
``main.c`` and a ``Makefile``.

Each op writes its own C (:meth:`deepshrink.graph.ops.Op.to_c`, through :class:`_NodeWriter`);
this module holds what surrounds it: the packed weights (:mod:`deepshrink.engine.layout`) as const
arrays, the plan of the activation arena, the input preprocessing and the command-line runner.

The arena is planned at export time: each value lives from the node computing it to its last
reader (the network's output to the final copy); reshapes, flattens and dropout take their
input's buffer (no copy), and an elementwise op writes over its input when nothing later reads
it. Buffers are placed first-fit, 16-byte aligned. The network's input is the caller's buffer;
its output is copied to the caller's buffer.

C identifiers are generated (``w3``, ``c7``, ``arena``); names from the file appear only in
comments, made comment-safe by :func:`comment`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepshrink._version import __version__
from deepshrink.data.spec import InputSpec
from deepshrink.engine.layout import PackedWeight, c_array, c_arrays, c_float, pack
from deepshrink.errors import UnsupportedOperationError
from deepshrink.graph.ir import Graph, Node, Plan
from deepshrink.graph.ops import OPS
from deepshrink.storage.tensors import CompressedTensor

HERE = Path(__file__).parent
ALIGN_FLOATS = 4
"""Arena buffers start at multiples of 16 bytes."""
FILES = ("model.c", "model.h", "main.c", "Makefile")


def comment(text: Any, limit: int = 100) -> str:
    """``text`` safe inside a C block comment: printable ASCII only, no ``*/``, ``/*``, backslash or
    trigraph (``??``), at most ``limit`` characters."""
    s = "".join(ch if 32 <= ord(ch) < 127 and ch != "\\" else "_" for ch in str(text))[:limit]
    while True:
        t = s.replace("*/", "*_").replace("/*", "/_").replace("??", "?_")
        if t == s:
            return s
        s = t


# ----------------------------------------------------------------------------------------------
# what the ops write


@dataclass
class _Step:
    """One node's C: its statements with placeholders for its inputs' and output's pointers."""

    index: int
    node: Node
    statements: list[str] = field(default_factory=list)
    alias: bool = False
    in_place: int | None = None


_X, _Y = "\x00X{}\x00", "\x00Y\x00"


class _NodeWriter:
    """The :class:`~deepshrink.graph.ops.base.CWriter` of one node."""

    def __init__(self, gen: _Generator, step: _Step):
        self.gen, self.step, self.node = gen, step, step.node

    def x(self, i: int = 0) -> str:
        if not 0 <= i < len(self.node.inputs):
            raise ValueError(f"node has no input {i}")
        return _X.format(i)

    def y(self) -> str:
        return _Y

    def alias(self) -> None:
        self.step.alias = True

    def in_place(self, i: int = 0) -> None:
        self.step.in_place = i

    def _pname(self, role: str) -> str:
        if role not in self.node.params:
            raise UnsupportedOperationError(f"node has no parameter {role!r}")
        return self.node.params[role]

    def weight(self, role: str) -> str:
        return self.gen.weight(self._pname(role))

    def tensor(self, role: str) -> str:
        return self.gen.tensor(self._pname(role))

    def param(self, role: str) -> np.ndarray:
        return self.gen.dense(self._pname(role))

    def shape(self, role: str) -> tuple[int, ...]:
        return self.gen.param_shapes[self._pname(role)]

    def floats(self, values: np.ndarray) -> str:
        return self.gen.const("float", np.asarray(values, np.float32))

    def ints(self, values: Sequence[int]) -> str:
        return self.gen.const("int32_t", np.asarray(values, np.int64))

    def struct(self, ctype: str, fields: Mapping[str, int]) -> str:
        return self.gen.struct(ctype, fields)

    def call(self, fn: str, *args: Any) -> None:
        self.step.statements.append(f"{fn}({', '.join(map(_c_arg, args))});")


def _c_arg(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        v = int(v)
        if not -(2**31) <= v < 2**31:
            return f"(size_t){v}u" if 0 <= v < 2**63 else str(v)
        return str(v)
    if isinstance(v, (float, np.floating)):
        return c_float(float(v))
    raise TypeError(f"cannot write {type(v).__name__} as a C argument")


class _Generator:
    """Collects the constants and steps of one engine."""

    def __init__(self, graph: Graph, plan: Plan, param_shapes: Mapping[str, tuple[int, ...]],
                 typed: Mapping[str, CompressedTensor] | None):
        self.graph, self.plan, self.param_shapes, self.typed = graph, plan, param_shapes, typed
        self.dry = typed is None
        self.weights: dict[str, tuple[str, PackedWeight | None]] = {}
        self.tensors: dict[str, str] = {}
        self.consts: list[tuple[str, str, np.ndarray, str]] = []  # name, ctype, values, comment
        self.structs: list[tuple[str, str, dict[str, int]]] = []
        self.steps: list[_Step] = []
        self.names = 0
        self.current = ""

    def fresh(self, prefix: str) -> str:
        self.names += 1
        return f"{prefix}{self.names}"

    def weight(self, pname: str) -> str:
        if pname not in self.weights:
            self.weights[pname] = (self.fresh("w"), None if self.dry else pack(self.typed[pname]))
        return "&" + self.weights[pname][0]

    def dense(self, pname: str) -> np.ndarray:
        if self.dry:
            return np.ones(self.param_shapes[pname], np.float32)
        return np.asarray(self.typed[pname].to_dense(), np.float32)

    def tensor(self, pname: str) -> str:
        if pname not in self.tensors:
            self.tensors[pname] = self.const("float", self.dense(pname).reshape(-1), f"parameter {comment(pname)}")
        return self.tensors[pname]

    def const(self, ctype: str, values: np.ndarray, note: str = "") -> str:
        name = self.fresh("c")
        self.consts.append((name, ctype, values.reshape(-1), note or self.current))
        return name

    def struct(self, ctype: str, fields: Mapping[str, int]) -> str:
        name = self.fresh("g")
        self.structs.append((name, ctype, {k: int(v) for k, v in fields.items()}))
        return "&" + name

    def weight_bytes(self) -> int:
        """Bytes of every const array (packed weights, biases, folded batch norms, shapes)."""
        out = sum(p.nbytes for _, p in self.weights.values() if p is not None)
        sizes = {"float": 4, "int32_t": 4}
        return out + sum(sizes[t] * max(1, v.size) for _, t, v, _ in self.consts)


def _graph_problems(graph: Graph, plan: Plan) -> list[str]:
    """What the engine cannot do with the graph as a whole (inputs and outputs)."""
    out = []
    if len(graph.inputs) != 1 or graph.inputs[0].dtype != "float32":
        described = ", ".join(f"{i.name} ({i.dtype})" for i in graph.inputs)
        out.append(f"inputs {comment(described, 200)}: the engine takes one float32 input")
    if len(graph.outputs) != 1:
        out.append(f"{len(graph.outputs)} outputs: the engine returns one")
    elif plan.dtypes.get(graph.outputs[0], "float32") != "float32":
        out.append(f"output of dtype {plan.dtypes[graph.outputs[0]]}: the engine returns float32")
    big = [name for name, shape in plan.shapes.items() if math.prod(shape) >= 2**31]
    if big:  # the kernels count values per sample in 32 bits
        out.append(f"values of 2**31 or more elements per sample ({comment(big[0])}): the engine's sizes are 32-bit")
    return out


def _collect(gen: _Generator) -> None:
    """Run every op's ``to_c``; one :class:`UnsupportedOperationError` naming every op the engine
    lacks (with the nodes where they occur)."""
    graph, plan = gen.graph, gen.plan
    problems = _graph_problems(graph, plan)
    lacking: dict[str, None] = {}
    for i, node in enumerate(graph.nodes):
        step = _Step(i, node)
        gen.current = f"node {i}: {comment(node.name)} ({node.op})"
        try:
            OPS[node.op].to_c(node, [plan.shapes[x] for x in node.inputs], plan.shapes[node.name],
                              _NodeWriter(gen, step))
        except UnsupportedOperationError as exc:
            lacking.setdefault(node.op, None)
            problems.append(f"node {i} ({comment(node.name)}, op {node.op}): {exc}")
            continue
        gen.steps.append(step)
    if problems:
        ops = ", ".join(lacking) or "none"
        raise UnsupportedOperationError(
            f"the C engine cannot run this network (ops it lacks: {ops}): " + "; ".join(problems[:20])
            + (f"; and {len(problems) - 20} more" if len(problems) > 20 else ""), problems)


def check_support(graph: Graph, plan: Plan, param_shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Raise one :class:`UnsupportedOperationError` naming every op (and graph feature) the engine
    lacks, without decoding any weight."""
    _collect(_Generator(graph, plan, param_shapes, None))


# ----------------------------------------------------------------------------------------------
# the arena


@dataclass
class _Buffer:
    size: int  # floats, aligned
    start: int  # index of the node that writes it first
    end: int = 0  # index of its last reader (len(nodes) for the network's output)
    offset: int = 0


def _plan_arena(gen: _Generator) -> tuple[dict[str, str], int]:
    """Each value's pointer expression (``input`` or ``arena + k``) and the arena's size in floats."""
    graph, plan = gen.graph, gen.plan
    n = len(graph.nodes)
    last: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        last.setdefault(node.name, i)
        for x in node.inputs:
            last[x] = i
    for o in graph.outputs:
        last[o] = n
    inp = graph.inputs[0].name
    of: dict[str, int | None] = {inp: None}  # value -> buffer index (None: the caller's input)
    members: list[list[str]] = []
    buffers: list[_Buffer] = []
    for step in gen.steps:
        node = step.node
        src = node.inputs[step.in_place] if step.in_place is not None else None
        if step.alias:
            of[node.name] = of[node.inputs[0]]
        elif src is not None and of[src] is not None and all(last[v] <= step.index for v in members[of[src]]):
            of[node.name] = of[src]  # elementwise over a buffer nothing later reads
        else:
            size = math.prod(plan.shapes[node.name])
            buffers.append(_Buffer(-(-size // ALIGN_FLOATS) * ALIGN_FLOATS, step.index))
            members.append([])
            of[node.name] = len(buffers) - 1
        if of[node.name] is not None:
            members[of[node.name]].append(node.name)
    for b, names in zip(buffers, members):
        b.end = max(last[v] for v in names)
    placed: list[_Buffer] = []
    for b in buffers:  # first fit among the buffers alive at the same time
        busy = sorted((p.offset, p.offset + p.size) for p in placed if p.end >= b.start and p.start <= b.end)
        offset = 0
        for lo, hi in busy:
            if offset + b.size <= lo:
                break
            offset = max(offset, hi)
        b.offset = offset
        placed.append(b)
    size = max((b.offset + b.size for b in buffers), default=0)
    ptrs = {v: "input" if k is None else f"(arena + {buffers[k].offset})" for v, k in of.items()}
    return ptrs, size


# ----------------------------------------------------------------------------------------------
# the files


@dataclass(frozen=True)
class EngineSource:
    """The generated engine: its files' text and what it needs."""

    files: Mapping[str, str]
    weight_bytes: int
    """Bytes of the const arrays (the compressed weights, biases, small tables): flash."""
    arena_bytes: int
    """Bytes of the static activation arena: RAM."""
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    raw_dtype: str
    layouts: Mapping[str, str] = field(default_factory=dict)
    """The packed layout of each weight (parameter name -> one of :data:`~deepshrink.engine.layout.KINDS`)."""


def engine_spec(graph: Graph, plan: Plan, spec: InputSpec | None) -> InputSpec:
    """The input preprocessing (the identity for a network whose graph declares its input)."""
    if spec is not None:
        return spec
    return InputSpec(plan.shapes[graph.inputs[0].name], "float32", 1.0, (0.0,), (1.0,))


def _summary(gen: _Generator) -> dict[str, Any]:
    ptrs, arena = _plan_arena(gen)
    return {"ptrs": ptrs, "arena_floats": arena, "arena_bytes": 4 * arena, "weight_bytes": gen.weight_bytes()}


def plan_bytes(graph: Graph, plan: Plan, param_shapes: Mapping[str, tuple[int, ...]],
               typed: Mapping[str, CompressedTensor] | None = None) -> dict[str, int | None]:
    """``arena_bytes`` (from the graph alone) and ``weight_bytes`` (None without ``typed``, the
    decoded tensors: their layouts decide it), without writing any C. Raises
    :class:`UnsupportedOperationError` as :func:`check_support` does."""
    gen = _Generator(graph, plan, param_shapes, typed)
    _collect(gen)
    s = _summary(gen)
    return {"arena_bytes": s["arena_bytes"], "weight_bytes": None if typed is None else s["weight_bytes"]}


def generate(graph: Graph, plan: Plan, spec: InputSpec | None, typed: Mapping[str, CompressedTensor]) -> EngineSource:
    """The engine's files for ``graph`` (validated, with its ``plan``) and its typed tensors.
    Raises :class:`UnsupportedOperationError` naming every op the engine lacks."""
    shapes = {k: tuple(v.shape) for k, v in typed.items()}
    gen = _Generator(graph, plan, shapes, typed)
    _collect(gen)
    s = _summary(gen)
    spec = engine_spec(graph, plan, spec)
    out_name = graph.outputs[0]
    in_shape, out_shape = plan.shapes[graph.inputs[0].name], plan.shapes[out_name]
    header = _model_h(gen, spec, in_shape, out_shape, s)
    files = {"model.c": _model_c(gen, spec, s, out_name, out_shape), "model.h": header,
             "main.c": (HERE / "main.c.in").read_text(), "Makefile": (HERE / "Makefile.in").read_text()}
    return EngineSource(files, s["weight_bytes"], s["arena_bytes"], in_shape, out_shape, spec.dtype,
                        {p: packed.kind for p, (_, packed) in gen.weights.items()})


def _list(values: Sequence[Any], fmt=str) -> str:
    return "{" + ", ".join(fmt(v) for v in values) + "}"


def _model_h(gen: _Generator, spec: InputSpec, in_shape, out_shape, s) -> str:
    raw = "uint8_t" if spec.dtype == "uint8" else "float"
    lines = [
        f"/* Generated by deepshrink {__version__}: a dependency-free C99 engine for one network. Do not edit. */",
        "#ifndef DEEPSHRINK_MODEL_H",
        "#define DEEPSHRINK_MODEL_H",
        "",
        "#include <stdint.h>",
        "",
        "/* one sample in: MODEL_INPUT_SIZE floats of shape MODEL_INPUT_SHAPE (channels first),",
        "   preprocessed from raw values as (raw * MODEL_INPUT_SCALE - mean[c]) / std[c] */",
        f"#define MODEL_INPUT_SIZE {math.prod(in_shape)}",
        f"#define MODEL_INPUT_RANK {len(in_shape)}",
        f"#define MODEL_INPUT_SHAPE {_list(in_shape)}",
        f"#define MODEL_INPUT_CHANNELS {in_shape[0]}",
        f"#define MODEL_INPUT_SCALE {c_float(spec.scale)}",
        f"#define MODEL_INPUT_MEAN {_list(spec.mean, c_float)}",
        f"#define MODEL_INPUT_STD {_list(spec.std, c_float)}",
        f"#define MODEL_INPUT_RAW_DTYPE \"{spec.dtype}\"",
        f"typedef {raw} model_raw_t; /* one raw input value */",
        "",
        "/* one sample out */",
        f"#define MODEL_OUTPUT_SIZE {math.prod(out_shape)}",
        f"#define MODEL_OUTPUT_RANK {len(out_shape)}",
        f"#define MODEL_OUTPUT_SHAPE {_list(out_shape)}",
        "",
        "/* memory: the static activation arena (RAM) and the const weights (flash) */",
        f"#define MODEL_ARENA_BYTES {s['arena_bytes']}",
        f"#define MODEL_WEIGHT_BYTES {s['weight_bytes']}",
        "",
        "/* raw[MODEL_INPUT_SIZE] -> input[MODEL_INPUT_SIZE], the preprocessing the network was trained with */",
        "void model_preprocess(const model_raw_t *raw, float *input);",
        "",
        "/* the network on one preprocessed sample: input[MODEL_INPUT_SIZE] -> output[MODEL_OUTPUT_SIZE].",
        "   It uses one static arena: not reentrant (one call at a time). */",
        "void model_run(const float *input, float *output);",
        "",
        "#endif /* DEEPSHRINK_MODEL_H */",
        "",
    ]
    return "\n".join(lines)


def _kernels_source() -> str:
    """kernels.h and kernels.c as one block whose functions are static (unused ones dropped)."""
    h = (HERE / "kernels.h").read_text()
    c = (HERE / "kernels.c").read_text().replace('#include "kernels.h"\n', "")
    return ("#define DS_API static DS_UNUSED\n#define DS_LINEAR_API static inline DS_ALWAYS_INLINE\n" + h + "\n" + c)


def _model_c(gen: _Generator, spec: InputSpec, s, out_name: str, out_shape) -> str:
    parts = [f"/* Generated by deepshrink {__version__}: a dependency-free C99 engine for one network. Do not edit.\n"
             "   Weights stay compressed in const arrays and are decoded inside the kernels; activations live in\n"
             f"   one static arena of {s['arena_bytes']} bytes. */\n",
             '#include "model.h"\n\n#include <math.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <string.h>\n\n',
             "/* ---- kernels (deepshrink/engine/kernels.h, kernels.c) ---- */\n", _kernels_source(),
             "\n/* ---- weights ---- */\n"]
    for pname, (cname, packed) in gen.weights.items():
        parts.append(f"/* {comment(pname)}: {packed.kind} {'x'.join(map(str, packed.shape))}, {packed.entries} "
                     f"entries, {packed.nbytes} bytes */\n")
        parts.append(c_arrays(packed, cname))
    for name, ctype, values, note in gen.consts:
        parts.append(f"/* {note} */\n" if note else "")
        parts.append(c_array(ctype, name, values))
    for name, ctype, fields in gen.structs:
        init = ", ".join(f".{k} = {v}" for k, v in fields.items())
        parts.append(f"static const {ctype} {name} = {{{init}}};\n")
    floats = max(1, s["arena_floats"])
    channels, plane = spec.shape[0], math.prod(spec.shape[1:])
    parts.append(f"\n/* ---- activations: {s['arena_bytes']} bytes ---- */\nstatic float arena[{floats}];\n")
    parts.append(
        "\nvoid model_preprocess(const model_raw_t *raw, float *input) {\n"
        "    static const float mean[] = MODEL_INPUT_MEAN, std[] = MODEL_INPUT_STD;\n"
        "    size_t c, j;\n"
        f"    for (c = 0; c < {channels}; c++) {{\n"
        f"        const float m = mean[{'c' if len(spec.mean) > 1 else 0}], s = std[{'c' if len(spec.std) > 1 else 0}];\n"
        f"        for (j = 0; j < {plane}; j++) {{\n"
        f"            const size_t i = c * {plane} + j;\n"
        "            input[i] = ((float)raw[i] * MODEL_INPUT_SCALE - m) / s;\n"
        "        }\n    }\n}\n")
    ptrs = s["ptrs"]
    body = []
    for step in gen.steps:
        node = step.node
        body.append(f"    /* node {step.index}: {comment(node.name)} ({node.op}){' = its input' if step.alias else ''} */")
        for st in step.statements:
            for i, x in enumerate(node.inputs):
                st = st.replace(_X.format(i), ptrs[x])
            body.append("    " + st.replace(_Y, ptrs[node.name]))
    body.append(f"    memcpy(output, {ptrs[out_name]}, sizeof(float) * {math.prod(out_shape)});")
    head = "    (void)input; /* unused by a network that never reads it (or by none of its kernels) */\n    (void)arena;\n"
    parts.append("\nvoid model_run(const float *input, float *output) {\n" + head + "\n".join(body) + "\n}\n")
    return "".join(parts)
