"""Reports of stored tensors: bytes per section and stream, nonzeros, entropy. Every encoding
of :mod:`deepshrink.storage.encodings` makes them the same way (:meth:`Encoding.report`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StreamReport:
    """One coded stream: its symbol count and alphabet, its coded size, and its order-0 entropy
    (``None`` when the stream was not decoded, e.g. ``deepshrink info`` without ``--check-streams``)."""

    symbols: int
    alphabet: int
    coded_bytes: int
    entropy_bytes: float | None
    coder: str = ""


@dataclass
class TensorReport:
    """What was stored for one tensor, and how large each part is. ``index_bytes`` are the
    sections that say where the weights are (gaps), ``weight_bytes`` those that say what they are
    (values, codebooks, symbols). ``nonzero`` is ``None`` when only decoding the coded streams
    would tell it."""

    name: str
    shape: tuple[int, ...]
    numel: int
    nonzero: int | None
    enc: str
    layout: str
    codebook_size: int = 0
    value_bits: int = 32
    index_bytes: int = 0
    weight_bytes: int = 0
    streams: dict[str, StreamReport] = field(default_factory=dict)
    encoding: str = ""
    dtype: str = "float32"
    gap_bits: int | None = None
    sections: dict[str, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return self.index_bytes + self.weight_bytes

    @property
    def kept(self) -> float | None:
        if self.nonzero is None:
            return None
        return self.nonzero / self.numel if self.numel else 0.0

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per element of the dense tensor (32 for float32 stored raw)."""
        return 8 * self.total_bytes / self.numel if self.numel else 0.0


@dataclass
class EncodedTensor:
    descriptor: dict[str, Any]
    sections: dict[str, bytes]
    report: TensorReport

    @property
    def nbytes(self) -> int:
        return sum(len(v) for v in self.sections.values())
