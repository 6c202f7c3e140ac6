"""``deepshrink info``: what a file holds and how many bytes each part takes, without data."""

from __future__ import annotations

import math
import os
from typing import Any

from deepshrink.fileformat.container import VERSION, Limits
from deepshrink.fileformat.model_file import read_model_file
from deepshrink.storage import section_owner


def info(path: str | os.PathLike | bytes, limits: Limits | None = None) -> dict[str, Any]:
    """Structure and per-tensor / per-section sizes of a deepshrink file (checksums verified)."""
    mf = read_model_file(path, limits)
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
    return {
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
    }
