"""``deepshrink info``: what a file holds and how many bytes each part takes, without data."""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any

from deepshrink.fileformat.container import VERSION, Limits
from deepshrink.fileformat.model_file import decode_tensors, read_model_file
from deepshrink.graph import build
from deepshrink.storage import section_owner


def sha256(path: str | os.PathLike | bytes) -> str:
    """Hex SHA-256 of a file (or of bytes): pin it to know a file is the one you trust (its
    CRC-32s only catch accidents, not tampering)."""
    if isinstance(path, (bytes, bytearray, memoryview)):
        return hashlib.sha256(path).hexdigest()
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def info(
    path: str | os.PathLike | bytes,
    limits: Limits | None = None,
    *,
    decode: bool = False,
    digest: bool = False,
) -> dict[str, Any]:
    """Structure and per-tensor / per-section sizes of a deepshrink file.

    Checksums, the header and every tensor descriptor are verified with the same checks
    :func:`deepshrink.load` uses, including the network's shapes, work and activation limits.
    The coded streams are decoded (and their values checked) only with ``decode=True``; the
    result says which in ``"streams_checked"``. ``digest=True`` adds the file's ``"sha256"``.
    """
    limits = limits or Limits()
    mf = read_model_file(path, limits)
    if decode:  # building checks the decoded values as loading does (e.g. batch-norm variances)
        build(mf.graph, decode_tensors(mf.container, mf.graph, limits))
    sections = {k: len(v) for k, v in mf.container.sections.items()}
    by_tensor: dict[str, dict[str, int]] = {}
    for k, n in sections.items():  # one pass, as parse_header's stray-section check
        by_tensor.setdefault(section_owner(k), {})[k] = n
    tensors = []
    for name in mf.graph.param_names:  # in network order
        desc = mf.tensors_desc[name]
        own = by_tensor.get(name, {})
        numel = math.prod(desc["shape"])
        stored = sum(own.values())
        tensors.append({
            "name": name,
            "shape": desc["shape"],
            "encoding": desc["enc"],
            "layout": desc.get("layout", "dense"),
            "codebook": desc.get("k", 0),
            "coder": (desc.get("sym") or desc.get("gap") or {}).get("coder", "none"),
            "gap_bits": desc.get("gap_bits"),
            "sections": own,
            "bytes": stored,
            "dense_bytes": numel * 4,
            "ratio": (numel * 4) / stored if stored else None,
        })
    nodes = [
        {"name": n.name, "op": n.op, "inputs": list(n.inputs),
         "params": {r: mf.tensors_desc[p]["shape"] for r, p in n.params.items()}}
        for n in mf.graph.nodes
    ]
    dense = sum(t["dense_bytes"] for t in tensors)
    out = {
        "format_version": VERSION,
        "producer": mf.producer,
        "file_bytes": mf.container.file_bytes,
        "header_bytes": mf.container.header_bytes,
        "payload_bytes": sum(sections.values()),
        "dense_bytes": dense,
        "ratio": dense / mf.container.file_bytes,
        "input": mf.input_spec.to_dict(),
        "graph": nodes,
        "output": mf.graph.output,
        "tensors": tensors,
        "meta": dict(mf.meta),
        "macs_per_sample": mf.plan.macs,
        "peak_activations_per_sample": mf.plan.peak_elements,
        "streams_checked": decode,
    }
    if digest:
        out["sha256"] = sha256(path)
    return out
