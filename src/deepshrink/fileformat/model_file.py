"""A whole network in one deepshrink file: structure, input specification and coded weights."""

from __future__ import annotations

import copy

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.utils.prune as tprune
from torch import nn

from deepshrink._version import __version__
from deepshrink.data.spec import InputSpec
from deepshrink.errors import DeepshrinkError, FormatError, InvalidHeader, LimitExceeded, ModelError
from deepshrink.fileformat import container
from deepshrink.fileformat.container import Container, Limits
from deepshrink.graph import OPS, Graph, Plan, build, trace
from deepshrink.storage import TensorCoding, TensorReport, check_descriptor, decode_tensor, encode_tensor
from deepshrink.util.atomic import write_bytes_atomic

FORMAT = "deepshrink"
MAX_PRODUCER = 200
_HEADER_KEYS = {"format", "producer", "input", "graph", "tensors", "meta", "sections"}

# Chooses how to store each parameter: (parameter name, tensor, op of its node, role) -> coding.
CodingRule = Callable[[str, np.ndarray, str, str], TensorCoding]


def default_coding(name: str, tensor: np.ndarray, op: str, role: str) -> TensorCoding:
    """Compress conv and linear weights (8-bit gaps for conv, 5-bit for fc, Huffman);
    store everything else raw."""
    kind = OPS[op].layer_kind if role == "weight" else None
    if kind is None:
        return TensorCoding(compress=False)
    return TensorCoding(gap_bits=8 if kind == "conv" else 5)


@dataclass
class PackReport:
    """Sizes of a packed model: per tensor, header and file."""

    file_bytes: int
    header_bytes: int
    tensors: list[TensorReport] = field(default_factory=list)

    @property
    def payload_bytes(self) -> int:
        return sum(t.total_bytes for t in self.tensors)


def _param_roles(graph: Graph) -> dict[str, tuple[str, str]]:
    roles: dict[str, tuple[str, str]] = {}
    for node in graph.nodes:
        for role, pname in node.params.items():
            roles.setdefault(pname, (node.op, role))
    return roles


def pack_model(
    model: nn.Module,
    input_spec: InputSpec,
    *,
    coding: CodingRule = default_coding,
    meta: Mapping[str, Any] | None = None,
    graph: Graph | None = None,
    verify: bool = True,
) -> tuple[bytes, PackReport]:
    """Serialise ``model`` (its parameters as they are now) into deepshrink file bytes.

    The model is traced into a graph; the graph rebuilt from the stored tensors must reproduce
    the model's output on a probe input, so a file never stores a network that runs differently.
    ``verify=False`` skips that decode and rebuild (the report's byte counts are exact either way);
    the caller must then check the network it decodes with :func:`check_reproduces`.
    Pruning masks (``torch.nn.utils.prune``, also left by SLR) are applied: a copy of the model is
    stored with its masked weights as plain weights; ``model`` itself is not changed.
    """
    pruned = [m for m in model.modules() if hasattr(m, "weight_mask") and tprune.is_pruned(m)]
    if pruned:
        from deepshrink.prune import current_weight, make_permanent

        for m in pruned:  # the hook's cached product is a non-leaf tensor, which deepcopy refuses
            m.weight = current_weight(m)
        model = make_permanent(copy.deepcopy(model))
        graph = None  # the copy's parameters are plain weights; trace it afresh
    graph = graph or trace(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    roles = _param_roles(graph)
    missing = [p for p in roles if p not in state]
    if missing:
        raise ModelError(f"the traced graph refers to parameters the model does not have: {missing}")
    tensors_desc: dict[str, Any] = {}
    sections: dict[str, bytes] = {}
    reports: list[TensorReport] = []
    for pname, (op, role) in roles.items():
        array = state[pname].to(torch.float32).numpy()
        enc = encode_tensor(pname, array, coding(pname, array, op, role))
        tensors_desc[pname] = enc.descriptor
        sections.update(enc.sections)
        reports.append(enc.report)
    header = {
        "format": FORMAT,
        "producer": f"deepshrink {__version__}",
        "input": input_spec.to_dict(),
        "graph": graph.to_dict(),
        "tensors": tensors_desc,
        "meta": dict(meta or {}),
    }
    data = container.pack(header, sections)
    parsed = container.unpack(data)
    try:  # never write a file that load would refuse
        parse_header(parsed, Limits())
    except FormatError as exc:
        raise ModelError(f"the model cannot be stored as a file deepshrink.load accepts: {exc}") from None
    if verify:
        check_reproduces(model, build(graph, decode_tensors(parsed, graph, Limits())), input_spec)
    return data, PackReport(len(data), parsed.header_bytes, reports)


def check_reproduces(model: nn.Module, net: nn.Module, input_spec: InputSpec) -> None:
    """Raise :class:`ModelError` unless ``net`` (decoded from a file) reproduces ``model``'s
    output on a probe input."""
    probe = torch.randn(2, *input_spec.shape, generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        want = model(probe)
        got = net(probe)
    model.train(was_training)
    if not isinstance(want, torch.Tensor) or want.shape != got.shape or not torch.allclose(want, got, rtol=1e-4, atol=1e-5):
        raise ModelError(
            "the stored graph does not reproduce the model's output on a probe input; the model may "
            "use operations the tracer did not see (e.g. data-dependent control flow)"
        )


def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    input_spec: InputSpec,
    *,
    coding: CodingRule = default_coding,
    meta: Mapping[str, Any] | None = None,
) -> PackReport:
    """Write ``model`` to ``path`` as a deepshrink file (atomically)."""
    data, report = pack_model(model, input_spec, coding=coding, meta=meta)
    write_bytes_atomic(path, data)
    return report


@dataclass(frozen=True)
class ModelFile:
    """The validated content of a deepshrink file, before building a network from it."""

    graph: Graph
    input_spec: InputSpec
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
    try:
        spec = InputSpec.from_dict(h["input"])
    except DeepshrinkError as exc:
        raise InvalidHeader(f"header 'input': {exc}") from None
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
        plan = graph.plan(spec.shape, {name: c.shape for name, c in checked.items()})
    except InvalidHeader as exc:
        raise InvalidHeader(f"the network does not run on its declared input shape {spec.shape}: {exc}") from None
    if plan.peak_elements > limits.max_activation_elements:
        raise LimitExceeded(
            f"the network holds {plan.peak_elements} activation values at once for one input of shape "
            f"{spec.shape}, over the limit of {limits.max_activation_elements}"
        )
    if plan.ops > limits.max_ops_per_sample:
        raise LimitExceeded(
            f"the network needs {plan.ops} operations per input (multiply-accumulates, and one per "
            f"output value of elementwise ops), over the limit of {limits.max_ops_per_sample} "
            "(Limits.max_ops_per_sample)"
        )
    return ModelFile(graph, spec, tensors_desc, h["meta"], h["producer"], None, plan)


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
