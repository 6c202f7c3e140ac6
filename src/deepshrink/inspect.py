"""``deepshrink info``: what a file holds and how many bytes each part takes, without data."""

from __future__ import annotations

import os
from typing import Any

import torch

from deepshrink.fileformat.container import VERSION, Limits
from deepshrink.fileformat.inspect import describe_tensors, sha256
from deepshrink.fileformat.model_file import read_model_file
from deepshrink.runtime.model import CompressedModel

__all__ = ["info", "sha256"]


def info(
    path: str | os.PathLike | bytes,
    limits: Limits | None = None,
    *,
    decode: bool = False,
    digest: bool = False,
    engine: bool | None = None,
) -> dict[str, Any]:
    """Structure and per-tensor / per-section sizes of a deepshrink file.

    Checksums, the header and every tensor descriptor are verified with the same checks
    :func:`deepshrink.load` uses, including the network's shapes, work and activation limits.
    The coded streams are decoded (and their values checked, and the network built as loading
    builds it) only with ``decode=True``; the result says which in ``"streams_checked"``, and
    only then are each tensor's ``nonzero`` count and its streams' entropy known.
    ``"input"`` is the input specification of a one-input network (None for a network whose
    inputs the graph declares, such as token ids and a mask); ``"inputs"`` and ``"outputs"`` give
    every graph input and output with its dtype and per-sample shape.
    ``digest=True`` adds the file's ``"sha256"``.
    ``"engine"`` is what the C engine (``export --format c``) needs: whether it runs the network
    (else the ``problems``), its RAM ``arena_bytes`` and const ``weight_bytes`` (the tensors are
    decoded for this; one that does not decode gives an ``"error"`` there instead of failing
    ``info``) and, with ``engine=True``, its
    ``flash_bytes`` (``model.c`` compiled; None without a compiler). ``engine=False`` leaves it out.
    """
    limits = limits or Limits()
    mf = read_model_file(path, limits)
    tensors, decoded = describe_tensors(mf.container, mf.graph.param_names, limits, decode=decode)
    if decode:  # building checks the decoded values as loading does (e.g. batch-norm variances)
        CompressedModel(mf, {k: torch.from_numpy(v) for k, v in decoded.items()}, limits)
    shapes = {t["name"]: t["shape"] for t in tensors}
    nodes = [
        {"name": n.name, "op": n.op, "inputs": list(n.inputs), "params": {r: shapes[p] for r, p in n.params.items()}}
        for n in mf.graph.nodes
    ]
    dense = sum(t["dense_bytes"] for t in tensors)
    out = {
        "format_version": VERSION,
        "producer": mf.producer,
        "file_bytes": mf.container.file_bytes,
        "header_bytes": mf.container.header_bytes,
        "payload_bytes": sum(len(v) for v in mf.container.sections.values()),
        "dense_bytes": dense,
        "ratio": dense / mf.container.file_bytes,
        "input": None if mf.input_spec is None else mf.input_spec.to_dict(),
        "inputs": [{"name": i.name, "dtype": i.dtype, "shape": list(mf.plan.shapes[i.name])} for i in mf.graph.inputs],
        "graph": nodes,
        "output": mf.graph.output if isinstance(mf.graph.output, str) else list(mf.graph.output),
        "outputs": [{"name": o, "dtype": mf.plan.dtypes[o], "shape": list(mf.plan.shapes[o])} for o in mf.graph.outputs],
        "tensors": tensors,
        "meta": dict(mf.meta),
        "macs_per_sample": mf.plan.macs,
        "peak_activations_per_sample": mf.plan.peak_elements,
        "streams_checked": decode,
    }
    if engine is not False:
        from deepshrink.engine.export import engine_report

        out["engine"] = engine_report(mf, limits, flash=bool(engine))
    if digest:
        out["sha256"] = sha256(path)
    return out
