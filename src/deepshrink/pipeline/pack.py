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
from deepshrink.graph import OPS, Graph, GraphNet, build, example_inputs, trace
from deepshrink.prune import current_weight, make_permanent
from deepshrink.recipes.stages import default_gap_bits
from deepshrink.runtime.model import CompressedModel
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


Inputs = tuple[torch.Tensor, ...]
"""One batch of every graph input, in the order of the model's ``forward`` arguments."""


def storage_inputs(model: nn.Module, input_spec: InputSpec | None, probe: Inputs | None = None) -> Graph:
    """Trace ``model`` for storing it on data with ``input_spec`` and example batch ``probe``.

    A network with one float32 input and an input specification keeps its input undeclared in
    the graph (the file's input specification gives its shape). A network without one (token ids,
    several inputs) declares every input's dtype and per-sample shape, read from ``probe``, the
    file's header then has ``"input": null``. A :class:`ModelError` says when ``input_spec`` does
    not describe the model's inputs or no example was given for a network that needs one."""
    if input_spec is not None:
        graph = trace(model)
        check_input_spec(graph, input_spec)
        return graph
    if probe is None:
        raise ModelError("a model stored without an input specification (token ids, several inputs) declares its "
                         "inputs from examples: give one batch of every input (probe=...)")
    return trace(model, inputs=probe)


def check_input_spec(graph: Graph, input_spec: InputSpec | None) -> None:
    """A :class:`ModelError` unless ``input_spec`` can describe ``graph``'s input: an input
    specification is for a network with one float32 input; one with several inputs or integer
    inputs (token ids, masks) is stored with ``None``, its inputs declared by the graph."""
    if input_spec is None:
        return
    if len(graph.inputs) != 1 or graph.inputs[0].dtype != "float32":
        described = ", ".join(f"{i.name} ({i.dtype})" for i in graph.inputs)
        raise ModelError(
            f"the data's input specification describes one float32 input of shape {input_spec.shape}; the model "
            f"takes {described}: data for a network of several or integer inputs has input_spec None"
        )
    declared = graph.inputs[0].shape
    if declared is not None and declared != input_spec.shape:
        raise ModelError(f"the model's input has per-sample shape {declared}; the data's input specification "
                         f"says {input_spec.shape}")


def pack_model(
    model: nn.Module,
    input_spec: InputSpec | None,
    *,
    coding: CodingRule = default_coding,
    meta: Mapping[str, Any] | None = None,
    graph: Graph | None = None,
    verify: bool = True,
    probe: Inputs | None = None,
) -> tuple[bytes, PackReport]:
    """Serialise ``model`` (its parameters as they are now) into deepshrink file bytes.

    The model is traced into a graph (:func:`storage_inputs`; a network without an
    ``input_spec``, such as a sentence encoder taking token ids and a mask, needs ``probe``, one
    example batch of its inputs, unless ``graph`` is given); the graph rebuilt from the stored
    tensors must reproduce the model's output on ``probe`` (random inputs the network accepts when
    None), so a file never stores a network that runs differently.
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
        if graph is not None:  # the copy's parameters are plain weights: trace it afresh, same inputs
            graph = trace(model, inputs=graph.inputs)
    graph = graph or storage_inputs(model, input_spec, probe)
    check_input_spec(graph, input_spec)
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
        check_reproduces(model, build(graph, decode_tensors(mf.container, graph, Limits())), input_spec, probe)
    return data, PackReport(len(data), mf.container.header_bytes, reports)


def _graph_tensors(model: nn.Module, graph: Graph) -> dict[str, torch.Tensor]:
    """The model's tensors that the graph names, on the CPU; :class:`ModelError` if one is missing."""
    state = model.state_dict()
    missing = [p for p in graph.param_names if p not in state]
    if missing:
        raise ModelError(f"the traced graph refers to parameters the model does not have: {missing}")
    return {p: state[p].detach().cpu() for p in graph.param_names}


def check_graph(model: nn.Module, graph: Graph, input_spec: InputSpec | None, probe: Inputs | None = None) -> None:
    """Raise :class:`ModelError` unless ``graph``, run on the model's own tensors, reproduces the
    model (no encoding) on ``probe`` (see :func:`check_reproduces`), and ``input_spec`` describes
    its input: what a compress run checks before any training."""
    check_input_spec(graph, input_spec)
    check_reproduces(model, build(graph, _graph_tensors(model, graph)), input_spec, probe)


def _probe(net: nn.Module, input_spec: InputSpec | None) -> Inputs:
    """Random inputs ``net`` (a network built from a graph) accepts: what :func:`check_reproduces`
    runs when the caller has no data."""
    if input_spec is not None:
        return (torch.randn(2, *input_spec.shape, generator=torch.Generator().manual_seed(0)),)
    graphnet = net.net if isinstance(net, CompressedModel) else net
    if not isinstance(graphnet, GraphNet):
        raise ModelError("check_reproduces needs an input specification or example inputs (probe=...) for a "
                         f"{type(net).__name__}, which declares no inputs")
    tensors = graphnet.named_graph_tensors()
    return example_inputs(graphnet.graph, graphnet.graph.input_shapes(), {k: tuple(v.shape) for k, v in tensors.items()})


def check_reproduces(model: nn.Module, net: nn.Module, input_spec: InputSpec | None = None,
                     probe: Inputs | None = None) -> None:
    """Raise :class:`ModelError` unless ``net`` (decoded from a file) reproduces every output of
    ``model`` on ``probe`` (one batch of each input; real samples are the better probe: token ids
    must be ids the tables hold). Without ``probe``: two standard normal samples of
    ``input_spec``'s shape, or, without it, random inputs of the shapes and dtypes ``net``'s graph
    declares, integer ids below its embedding tables' sizes (:func:`deepshrink.graph.example_inputs`)."""
    xs = tuple(probe) if probe is not None else _probe(net, input_spec)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            want = model(*xs)
            got = net(*xs)
    finally:
        model.train(was_training)
    wants = want if isinstance(want, tuple) else (want,)
    gots = got if isinstance(got, tuple) else (got,)
    if len(wants) != len(gots) or not all(
        isinstance(w, torch.Tensor) and isinstance(g, torch.Tensor) and w.shape == g.shape
        and torch.allclose(w, g, rtol=1e-4, atol=1e-5) for w, g in zip(wants, gots)
    ):
        raise ModelError(
            "the stored graph does not reproduce the model's output on a probe input; the model may "
            "use operations the tracer did not see (e.g. data-dependent control flow)"
        )


def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    input_spec: InputSpec | None,
    *,
    coding: CodingRule = default_coding,
    meta: Mapping[str, Any] | None = None,
    probe: Inputs | None = None,
) -> PackReport:
    """Write ``model`` to ``path`` as a deepshrink file (atomically); ``probe`` as for :func:`pack_model`."""
    data, report = pack_model(model, input_spec, coding=coding, meta=meta, probe=probe)
    write_bytes_atomic(path, data)
    return report
