"""A whole network in one deepshrink file: structure, input specification and coded weights, as
bytes <-> a validated header and its sections (packing a PyTorch model is deepshrink.pipeline.pack)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from deepshrink._version import __version__
from deepshrink.data.spec import InputSpec
from deepshrink.errors import DeepshrinkError, InvalidHeader, LimitExceeded
from deepshrink.fileformat import container
from deepshrink.fileformat.container import Container, Limits
from deepshrink.graph.ir import Graph, Plan
from deepshrink.storage import check_descriptor, decode_tensor

FORMAT = "deepshrink"
MAX_PRODUCER = 200
_HEADER_KEYS = {"format", "producer", "input", "graph", "tensors", "meta", "sections"}

@dataclass(frozen=True)
class ModelFile:
    """The validated content of a deepshrink file, before building a network from it."""

    graph: Graph
    input_spec: InputSpec | None
    """How to preprocess the raw input of a one-input network; None for a network whose inputs
    the graph declares (token ids and masks are fed as they are)."""
    tensors_desc: Mapping[str, Any]
    meta: Mapping[str, Any]
    producer: str
    container: Container | None  # None only between check_header and reading the sections
    plan: Plan


def parse_header(parsed: Container, limits: Limits) -> ModelFile:
    """Validate the header of a parsed container (no tensor is decoded)."""
    return replace(check_header(parsed.header, list(parsed.sections), parsed.file_bytes, limits), container=parsed)


def check_header(h: dict[str, Any], sections: list[str], file_bytes: int, limits: Limits) -> ModelFile:
    """Validate a file's header against its section names and size, before any section is read
    (the returned :class:`ModelFile` has no container yet)."""
    if set(h) != _HEADER_KEYS:
        raise InvalidHeader(f"header keys must be {sorted(_HEADER_KEYS)}, got {sorted(h)}")
    if h["format"] != FORMAT:
        raise InvalidHeader(f"header 'format' must be {FORMAT!r}, got {h['format']!r}")
    if not isinstance(h["producer"], str) or len(h["producer"]) > MAX_PRODUCER or not isinstance(h["meta"], dict):
        raise InvalidHeader(f"header 'producer' must be a string of at most {MAX_PRODUCER} characters and 'meta' an object")
    graph = Graph.from_dict(h["graph"])
    spec, shapes = _input_shapes(graph, h["input"])
    tensors_desc = h["tensors"]
    if not isinstance(tensors_desc, dict):
        raise InvalidHeader("header 'tensors' must be an object")
    wanted = set(graph.param_names)
    if set(tensors_desc) != wanted:
        raise InvalidHeader(
            f"header 'tensors' must describe exactly the graph's parameters: missing "
            f"{sorted(wanted - set(tensors_desc))}, unexpected {sorted(set(tensors_desc) - wanted)}"
        )
    checked = {name: check_descriptor(name, desc, limits) for name, desc in tensors_desc.items()}
    # every node reference counts: a network builds one copy of a parameter per node using it
    total = sum(checked[p].numel for node in graph.nodes for p in node.params.values())
    if total > limits.max_total_elements:
        raise LimitExceeded(f"the file's network needs {total} parameter values, over the limit of {limits.max_total_elements}")
    decoded = sum(c.numel for c in checked.values())
    if decoded > limits.max_elements_per_file_byte * file_bytes:
        raise LimitExceeded(
            f"the file declares {decoded} weights in {file_bytes} bytes, more than "
            f"{limits.max_elements_per_file_byte} per byte (Limits.max_elements_per_file_byte)"
        )
    claimed = {section: name for name, c in checked.items() for section in c.sections}
    stray = [k for k in sections if k not in claimed]
    if stray:
        raise InvalidHeader(f"{len(stray)} sections belong to no tensor, e.g. {stray[:5]}")
    missing = sorted(set(claimed) - set(sections))
    if missing:
        raise InvalidHeader(f"tensor {claimed[missing[0]]!r}: section {missing[0]!r} is missing")
    try:
        plan = graph.plan(shapes, {name: c.shape for name, c in checked.items()})
    except InvalidHeader as exc:
        raise InvalidHeader(f"the network does not run on its declared input shape {_fmt(shapes)}: {exc}") from None
    if plan.peak_elements > limits.max_activation_elements:
        raise LimitExceeded(
            f"the network holds {plan.peak_elements} activation values at once for one input of shape "
            f"{_fmt(shapes)}, over the limit of {limits.max_activation_elements}"
        )
    if plan.ops > limits.max_ops_per_sample:
        raise LimitExceeded(
            f"the network needs {plan.ops} operations per input (multiply-accumulates, and one per "
            f"output value of elementwise ops), over the limit of {limits.max_ops_per_sample} "
            "(Limits.max_ops_per_sample)"
        )
    return ModelFile(graph, spec, tensors_desc, h["meta"], h["producer"], None, plan)


def _fmt(shapes: dict[str, tuple[int, ...]]) -> str:
    return str(next(iter(shapes.values()))) if len(shapes) == 1 else str(shapes)


def _input_shapes(graph: Graph, raw: Any) -> tuple[InputSpec | None, dict[str, tuple[int, ...]]]:
    """The header's input specification and the per-sample shape of each graph input. A network
    with one float32 input has an input specification (its shape is the input's; a shape the
    graph also declares must agree); a network whose inputs all declare their shapes may have
    none (``null``)."""
    if raw is None:
        try:
            return None, graph.input_shapes()
        except InvalidHeader as exc:
            raise InvalidHeader(f"header 'input' is null, so every graph input must declare its shape: {exc}") from None
    try:
        spec = InputSpec.from_dict(raw)
    except DeepshrinkError as exc:
        raise InvalidHeader(f"header 'input': {exc}") from None
    (inp, *more) = graph.inputs
    if more or inp.dtype != "float32" or inp.shape not in (None, spec.shape):
        raise InvalidHeader(
            f"header 'input' describes one float32 input of shape {spec.shape}; the graph's inputs are "
            f"{[i.to_dict() for i in graph.inputs]} (a network with several or integer inputs has 'input': null)"
        )
    return spec, {inp.name: spec.shape}


def pack_model_file(
    graph: Graph, input_spec: InputSpec | None, tensors: Mapping[str, Any], sections: Mapping[str, bytes],
    meta: Mapping[str, Any] | None = None,
) -> tuple[bytes, ModelFile]:
    """The bytes of a deepshrink file holding ``graph`` on ``input_spec`` with its encoded tensors
    (descriptors and sections), and their validated content; a :class:`FormatError` if
    :func:`read_model_file` would refuse them. ``input_spec`` is None for a network whose graph
    declares its inputs' shapes (several inputs, token ids)."""
    header = {
        "format": FORMAT,
        "producer": f"deepshrink {__version__}",
        "input": None if input_spec is None else input_spec.to_dict(),
        "graph": graph.to_dict(),
        "tensors": dict(tensors),
        "meta": dict(meta or {}),
    }
    data = container.pack(header, sections)
    return data, parse_header(container.unpack(data), Limits())


def decode_tensors(parsed: Container, graph: Graph, limits: Limits) -> dict[str, torch.Tensor]:
    """Decode every tensor the header describes."""
    out = {}
    for name, desc in parsed.header["tensors"].items():
        out[name] = torch.from_numpy(decode_tensor(name, desc, parsed.sections, limits))
    return out


def read_model_file(path_or_bytes: str | os.PathLike | bytes, limits: Limits | None = None) -> ModelFile:
    """Read and validate a deepshrink file (no tensor is decoded). From a path, the header is
    validated before the payload is read."""
    limits = limits or Limits()
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return parse_header(container.unpack(path_or_bytes, limits), limits)
    checked: list[ModelFile] = []
    parsed = container.read(path_or_bytes, limits,
                            check=lambda h, sections, size: checked.append(check_header(h, sections, size, limits)))
    return replace(checked[0], container=parsed)
