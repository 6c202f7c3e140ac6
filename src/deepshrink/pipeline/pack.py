"""Packing a PyTorch model into deepshrink file bytes: trace it, apply pruning masks, encode each
parameter, and check that the stored network reproduces the model."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.utils.prune as tprune
from torch import nn

from deepshrink.data.spec import InputSpec
from deepshrink.errors import FormatError, ModelError
from deepshrink.fileformat.container import Limits
from deepshrink.fileformat.model_file import decode_tensors, pack_model_file
from deepshrink.graph import OPS, Graph, build, trace
from deepshrink.prune import current_weight, make_permanent
from deepshrink.recipes.stages import default_gap_bits
from deepshrink.storage import TensorCoding, TensorReport, encode_tensor
from deepshrink.util.atomic import write_bytes_atomic

# Chooses how to store each parameter: (parameter name, tensor, op of its node, role) -> coding.
CodingRule = Callable[[str, np.ndarray, str, str], TensorCoding]


def default_coding(name: str, tensor: np.ndarray, op: str, role: str) -> TensorCoding:
    """Compress layer weights (every op with a layer kind; Huffman, each kind's default gap width
    from :data:`deepshrink.storage.DEFAULT_GAP_BITS`); store everything else raw."""
    kind = OPS[op].layer_kind if role == "weight" else None
    if kind is None:
        return TensorCoding(compress=False)
    return TensorCoding(gap_bits=default_gap_bits(kind))


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
        for m in pruned:  # the hook's cached product is a non-leaf tensor, which deepcopy refuses
            m.weight = current_weight(m)
        model = make_permanent(copy.deepcopy(model))
        graph = None  # the copy's parameters are plain weights; trace it afresh
    graph = graph or trace(model)
    state = _graph_tensors(model, graph)
    roles = _param_roles(graph)
    tensors_desc: dict[str, Any] = {}
    sections: dict[str, bytes] = {}
    reports: list[TensorReport] = []
    for pname, (op, role) in roles.items():
        array = state[pname].to(torch.float32).numpy()
        enc = encode_tensor(pname, array, coding(pname, array, op, role))
        tensors_desc[pname] = enc.descriptor
        sections.update(enc.sections)
        reports.append(enc.report)
    try:  # never write a file that load would refuse
        data, mf = pack_model_file(graph, input_spec, tensors_desc, sections, meta)
    except FormatError as exc:
        raise ModelError(f"the model cannot be stored as a file deepshrink.load accepts: {exc}") from None
    if verify:
        check_reproduces(model, build(graph, decode_tensors(mf.container, graph, Limits())), input_spec)
    return data, PackReport(len(data), mf.container.header_bytes, reports)


def _graph_tensors(model: nn.Module, graph: Graph) -> dict[str, torch.Tensor]:
    """The model's tensors that the graph names, on the CPU; :class:`ModelError` if one is missing."""
    state = model.state_dict()
    missing = [p for p in graph.param_names if p not in state]
    if missing:
        raise ModelError(f"the traced graph refers to parameters the model does not have: {missing}")
    return {p: state[p].detach().cpu() for p in graph.param_names}


def check_graph(model: nn.Module, graph: Graph, input_spec: InputSpec) -> None:
    """Raise :class:`ModelError` unless ``graph``, run on the model's own tensors, reproduces the
    model (no encoding): what a compress run checks before any training."""
    check_reproduces(model, build(graph, _graph_tensors(model, graph)), input_spec)


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
