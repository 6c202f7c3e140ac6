"""What the bytes of a deepshrink file hold, tensor by tensor and section by section.

Everything about a tensor is read through the encoding registry (:func:`deepshrink.storage.tensor_report`);
this module looks up no descriptor field itself and knows nothing about networks. The whole
``deepshrink info`` (graph, work per sample, building the network) is :func:`deepshrink.inspect.info`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import numpy as np

from deepshrink.fileformat.container import Container, Limits
from deepshrink.storage import TensorReport, tensor_report


def sha256(path: str | os.PathLike | bytes) -> str:
    """Hex SHA-256 of a file (or of bytes): pin it to know a file is the one you trust (its
    CRC-32s only catch accidents, not tampering)."""
    if isinstance(path, (bytes, bytearray, memoryview)):
        return hashlib.sha256(path).hexdigest()
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tensor_row(report: TensorReport) -> dict[str, Any]:
    """One tensor of ``info``'s table, from its registry report. ``encoding`` is the
    descriptor's ``enc`` and ``layout`` its layout (``dense`` for raw); ``nonzero`` and the
    streams' ``entropy_bytes`` are ``None`` unless the streams were decoded."""
    dense = report.numel * 4
    stored = report.total_bytes
    return {
        "name": report.name,
        "shape": list(report.shape),
        "encoding": report.enc,
        "layout": report.layout,
        "dtype": report.dtype,
        "codebook": report.codebook_size,
        "coder": next(iter(report.streams.values())).coder if report.streams else "none",
        "gap_bits": report.gap_bits,
        "nonzero": report.nonzero,
        "sections": dict(report.sections),
        "streams": {k: asdict(s) for k, s in report.streams.items()},
        "index_bytes": report.index_bytes,
        "weight_bytes": report.weight_bytes,
        "bytes": stored,
        "bits_per_weight": report.bits_per_weight,
        "dense_bytes": dense,
        "ratio": dense / stored if stored else None,
    }


def describe_tensors(
    parsed: Container, names: Iterable[str], limits: Limits | None = None, *, decode: bool = False
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """:func:`tensor_row` of every tensor in ``names`` (in that order), and with ``decode=True``
    their decoded float32 values (each stream decoded once, for both)."""
    limits = limits or Limits()
    rows, decoded = [], {}
    for name in names:
        report, dense = tensor_report(name, parsed.header["tensors"][name], parsed.sections, limits, decode=decode)
        rows.append(tensor_row(report))
        if dense is not None:
            decoded[name] = dense
    return rows, decoded
