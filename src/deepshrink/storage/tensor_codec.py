"""Choosing how to store one float32 tensor, and storing it: :func:`encode_tensor`.

What each encoding writes, and how it is read back, belongs to its class in
:mod:`deepshrink.storage.encodings`; this module only decides which one to use. Every layout a
:class:`TensorCoding` allows is sized from symbol histograms before anything is coded, and only
the chosen one is coded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from deepshrink.coding import Coder, stream_size
from deepshrink.errors import ConfigError, ModelError
from deepshrink.storage.encodings import (
    ENCODINGS,
    MAX_CODEBOOK,
    MAX_GAP_BITS,
    EncodedTensor,
    Prepared,
    SharedValues,
    form_encoding,
    symbol_bits,
)
from deepshrink.storage.tensors import CompressedTensor

#: Gap widths tried when a coding gives none (``gap_bits=None``).
AUTO_GAP_BITS = tuple(range(2, 11))
#: Gap widths by layer kind when a recipe gives none: the paper's 8 bits for convolutions and 5
#: for fully connected layers (Han et al. 2016); 8 for embedding tables (measured on
#: all-MiniLM-L6-v2's word embeddings pruned to 70 % and 90 % and shared to 16 values: 8 bits is
#: within 1 % of the best width, 5 bits 2-8 % larger). Every layer kind of the op registry
#: (:func:`deepshrink.prune.layer_kinds`) has an entry (a registry test checks it); a kind
#: without one would have its width chosen per tensor.
DEFAULT_GAP_BITS = {"conv": 8, "linear": 5, "embedding": 8}
#: What one decoded symbol costs, in bits of file size, when :func:`encode_tensor` compares the
#: raw, dense and sparse layouts: a layout that makes the decoder decode more symbols (dense: one
#: per element; sparse: a gap and a symbol per entry) is chosen only if it saves more than this
#: per extra symbol. For example an 8%-dense tensor stays sparse unless dense saves about 2% of
#: its bytes, since dense decodes ~6x the symbols.
SYMBOL_COST_BITS = 1 / 64


class StaleForm(ModelError):
    """A tensor's weights differ from the typed form a stage stored for it."""


@dataclass(frozen=True)
class TensorCoding:
    """How to store one tensor. ``compress=False`` stores it raw (float32, or float16 when that
    is exact). ``gap_bits=None`` sizes every width in :data:`AUTO_GAP_BITS` and keeps the
    smallest; ``layout="auto"`` chooses between raw, dense and sparse as :func:`encode_tensor`
    describes."""

    compress: bool = True
    coder: Coder = Coder.HUFFMAN
    gap_bits: int | None = DEFAULT_GAP_BITS["linear"]
    max_codebook: int = 256
    layout: str = "auto"
    form: CompressedTensor | None = None
    """A typed tensor a stage left for this tensor (``ctx.forms``): stored as it is by the
    encoding that writes its class (:func:`~deepshrink.storage.encodings.form_encoding`); the
    tensor's values must equal ``form.to_dense()`` bit for bit."""
    grid: tuple[int, int] | None = None
    """With ``coder="context"``: the ``(h, w)`` images a row's columns form (e.g. ``(28, 28)``
    for a layer fed a flattened 28x28 picture), tried besides the grids the encoding infers
    (:func:`~deepshrink.storage.context_encoding.candidate_grids`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "coder", Coder(self.coder))
        if self.grid is not None:
            if not isinstance(self.grid, (tuple, list)) or len(self.grid) != 2 or any(
                    isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in self.grid):
                raise ConfigError(f"grid must be two positive integers (h, w), got {self.grid!r}")
            object.__setattr__(self, "grid", tuple(self.grid))
        if self.gap_bits is not None and not 1 <= self.gap_bits <= MAX_GAP_BITS:
            raise ConfigError(f"gap_bits must be in 1..{MAX_GAP_BITS}, got {self.gap_bits}")
        if not 1 <= self.max_codebook < MAX_CODEBOOK:
            raise ConfigError(f"max_codebook must be in 1..{MAX_CODEBOOK - 1}, got {self.max_codebook}")
        if self.layout not in ("auto", "dense", "sparse"):
            raise ConfigError(f"layout must be 'auto', 'dense' or 'sparse', got {self.layout!r}")


@dataclass(frozen=True)
class _Plan:
    """A candidate layout, sized from histograms before anything is coded."""

    layout: str  # "raw", "dense" or "sparse"
    nbytes: int  # bytes of its sections (exact for fixed and Huffman, an estimate for ANS)
    symbols: int  # symbols the decoder decodes
    gap_bits: int = 0

    @property
    def cost(self) -> float:
        """File bits plus :data:`SYMBOL_COST_BITS` per decoded symbol."""
        return 8 * self.nbytes + SYMBOL_COST_BITS * self.symbols


def _sparse_plan(real_gap: np.ndarray, gap_bits: int, coder: Coder, itemsize: int,
                 sym_counts: np.ndarray | None, cb_bytes: int) -> _Plan:
    """Size of the relative-index layout with ``gap_bits`` from the gaps between nonzeros:
    a gap ``r`` becomes ``r >> gap_bits`` fillers (gap ``2**gap_bits - 1``, symbol K) and one
    entry of gap ``r mod 2**gap_bits`` (see :func:`~deepshrink.coding.encode_positions`)."""
    fillers = int((real_gap >> gap_bits).sum())
    entries = len(real_gap) + fillers
    gap_counts = np.bincount(real_gap & ((1 << gap_bits) - 1), minlength=1 << gap_bits)
    gap_counts[-1] += fillers
    nbytes = stream_size(gap_counts, coder, gap_bits)
    if sym_counts is None:
        return _Plan("sparse", nbytes + entries * itemsize, entries, gap_bits)
    counts = sym_counts.copy()
    counts[-1] += fillers
    nbytes += cb_bytes + stream_size(counts, coder, symbol_bits(len(counts)))
    return _Plan("sparse", nbytes, 2 * entries, gap_bits)


def _plans(numel: int, positions: np.ndarray, shared: SharedValues | None, coding: TensorCoding,
           itemsize: int) -> list[_Plan]:
    """The candidate layouts ``coding`` allows, each sized from symbol histograms; of the
    sparse gap widths only the smallest is kept."""
    plans = [_Plan("raw", numel * itemsize, 0)] if coding.layout == "auto" else []
    sym_counts, cb_bytes = None, 0
    if shared is not None:
        k = shared.k
        sym_counts, cb_bytes = np.bincount(shared.symbols, minlength=k + 1), len(shared.data)
        if coding.layout in ("auto", "dense"):
            counts = sym_counts.copy()
            counts[k] += numel - len(positions)
            plans.append(_Plan("dense", cb_bytes + stream_size(counts, coding.coder, symbol_bits(k + 1)), numel))
    if coding.layout in ("auto", "sparse"):
        real_gap = np.diff(positions, prepend=-1) - 1
        widths = AUTO_GAP_BITS if coding.gap_bits is None else (coding.gap_bits,)
        sparse = [_sparse_plan(real_gap, g, coding.coder, itemsize, sym_counts, cb_bytes) for g in widths]
        plans.append(min(sparse, key=lambda p: p.nbytes))
    return plans


def encode_tensor(name: str, array: np.ndarray, coding: TensorCoding) -> EncodedTensor:
    """Encode ``array`` (any shape, float32) under the key ``name``.

    Every layout ``coding`` allows is sized from symbol histograms and the code lengths they
    imply (:func:`~deepshrink.coding.stream_size`: exact for fixed and Huffman codes, within a
    few bytes for ANS); only the chosen one is coded. Of the sparse gap widths the smallest
    wins. Between the raw, dense and sparse layouts (``layout="auto"``) the lowest
    ``8 * bytes + SYMBOL_COST_BITS * decoded symbols`` wins: dense must save more than
    :data:`SYMBOL_COST_BITS` bits per extra symbol it makes the decoder decode. A sparse tensor
    with too many distinct values for ``max_codebook`` keeps its values as floats
    (``float/sparse``).

    With ``coder="context"`` the classic layouts are coded with ANS, and a tensor with a
    codebook (``layout="auto"``) is also coded with ``codebook/context``
    (:mod:`deepshrink.coding.context`); the smaller of the two, by exact bytes, is kept. Typed
    forms are stored by their encoding with ANS.
    """
    if coding.coder is Coder.CONTEXT:
        return _encode_context(name, array, coding)
    if coding.form is not None:
        dense = np.asarray(coding.form.to_dense(), dtype=np.float32)
        values = np.ascontiguousarray(array, dtype=np.float32)
        if dense.shape != values.shape or not np.array_equal(dense.view(np.uint32), values.view(np.uint32)):
            raise StaleForm(f"tensor {name!r}: its weights no longer equal the {type(coding.form).__name__} a stage "
                            "stored for it (a later step changed them); refusing to store a different network")
        return form_encoding(coding.form).encode_form(name, coding.form, coding.coder)
    t = Prepared.of(array, coding.max_codebook if coding.compress else 0)
    best = _Plan("raw", 0, 0)
    if coding.compress and t.flat.size:
        best = min(_plans(t.flat.size, t.positions, t.shared, coding, t.itemsize), key=lambda p: p.cost, default=best)
    if best.layout == "sparse":
        encoding = ENCODINGS["codebook/sparse" if t.shared is not None else "float/sparse"]
    elif best.layout == "dense" and t.shared is not None:
        encoding = ENCODINGS["codebook/dense"]
    else:
        encoding = ENCODINGS["raw"]
    return encoding.encode(name, t, coding.coder, best.gap_bits)


def _encode_context(name: str, array: np.ndarray, coding: TensorCoding) -> EncodedTensor:
    """:func:`encode_tensor` under ``coder="context"``: the best classic layout coded with ANS
    against ``codebook/context``, the smaller kept (the classic one on a tie)."""
    classic = encode_tensor(name, array, replace(coding, coder=Coder.ANS))
    if coding.form is not None or not coding.compress or coding.layout != "auto":
        return classic
    t = Prepared.of(array, coding.max_codebook)
    if t.shared is None or not t.flat.size:
        return classic
    ctx = ENCODINGS["codebook/context"].encode(name, t, Coder.CONTEXT, 0, grid=coding.grid)
    return ctx if ctx.nbytes < classic.nbytes else classic
