"""Typed compressed tensors: what a stored tensor *is*, before it is expanded to dense float32.

Decoding to a dense array throws away the structure a fast runtime or a C export needs (which
weights are zero, which codebook entry each weight uses). These small frozen dataclasses keep
it. Each declares its data fields in ``tensor_data_names`` (as torchao's compressed tensors do),
and has :meth:`~CompressedTensor.to_dense` (alias :meth:`~CompressedTensor.dequantize`), which
equals :func:`deepshrink.storage.decode_tensor` bit for bit, and :meth:`~CompressedTensor.csr`, a
row-compressed view of the tensor flattened to 2-D (rows = first dimension; a convolution
weight ``[out, in, kh, kw]`` becomes ``[out, in*kh*kw]``, the order the file stores it in).

Zeros are never stored as entries: the filler entries of the relative-index layout (gaps that
overflowed ``gap_bits``) are dropped when decoding, so ``positions`` lists real entries only.

Each typed tensor also writes its own compact ONNX form (:meth:`~CompressedTensor.to_onnx`,
used by ``deepshrink export --compact``): codebook indices as bytes looked up with ``Gather``
(or ``DequantizeLinear`` when the codebook is a uniform integer grid), pruned tensors as small
gaps summed into positions and scattered into zeros, or densely when that is smaller in ONNX.
It writes through the small writer protocol the graph's ops use
(:class:`deepshrink.graph.ops.base.OnnxGraph`: ``node``, ``init`` and ``cast``), so this
module needs no ONNX import.

Factorised (SVD, SLR, Tucker, CP) layers need no type of their own: the file stores them as a
chain of ordinary layers whose weights are ordinary tensors (see docs/format.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

GAP_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
"""The gap widths of the compact ONNX layout of a sparse tensor, the smaller tried first: a gap
wider than the dtype holds is split by filler entries of value zero (the file's relative-index
layout), so very sparse tensors get uint16 gaps when that saves the fillers' bytes."""
CAST_NODE_BYTES = 96
"""About what a ``Cast`` node costs in an ONNX file (names and attribute): float16 storage plus
a Cast is written only when it saves more than this."""
SPARSE_NODES_BYTES = 256
"""About what the extra nodes of the sparse ONNX layout cost (CumSum, ConstantOfShape,
ScatterElements, Reshape and their small initializers): a sparse tensor is written densely
when that is no larger than its gaps and values plus this."""


def index_dtype(symbols: int) -> np.dtype:
    """The smallest unsigned dtype holding ``symbols`` distinct codebook indices (uint8 up to
    256, else uint16: a codebook has at most 2**16 - 1 entries plus the zero symbol)."""
    return np.dtype(np.uint8) if symbols <= 256 else np.dtype(np.uint16)


def _rows_cols(shape: tuple[int, ...]) -> tuple[int, int]:
    """The 2-D view of ``shape``: first dimension by the rest (a 0-d or 1-D tensor is one row)."""
    if len(shape) < 2:
        return 1, math.prod(shape)
    return shape[0], math.prod(shape[1:])


@dataclass(frozen=True, eq=False)
class CSRMatrix:
    """Compressed sparse rows of a tensor flattened to ``shape = (rows, cols)``.

    Row ``r`` holds entries ``indptr[r]:indptr[r+1]`` of ``indices`` (column, int64) and
    ``values``. With ``codebook`` None, ``values`` are the float32 weights; otherwise they are
    codebook indices (uint8/uint16) and the weight is ``codebook[values]``, which is how a C
    kernel can keep 5-bit weights as bytes and look them up."""

    tensor_data_names: ClassVar[tuple[str, ...]] = ("indptr", "indices", "values", "codebook")

    shape: tuple[int, int]
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    codebook: np.ndarray | None = None

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    def weights(self) -> np.ndarray:
        """The float32 value of every entry (looked up in the codebook when there is one)."""
        return self.values if self.codebook is None else self.codebook[self.values]

    def to_dense(self) -> np.ndarray:
        rows, cols = self.shape
        out = np.zeros(rows * cols, dtype=np.float32)
        row_of = np.repeat(np.arange(rows, dtype=np.int64), np.diff(self.indptr))
        out[row_of * cols + self.indices] = self.weights()
        return out.reshape(rows, cols)


def uniform_grid(table: np.ndarray) -> tuple[np.ndarray, np.float32, np.integer] | None:
    """``(q, scale, zero_point)`` when every value of ``table`` (float32, holding a 0) is exactly
    ``float32(q - zero_point) * scale`` (what ONNX's ``DequantizeLinear`` computes) for integers
    ``q`` of int8 (``zero_point`` 0) or uint8; else None. Scales ``min|nonzero| / m`` for
    ``m = 1..255`` are tried, each with its float32 neighbours, and each checked exactly."""
    t = np.asarray(table, dtype=np.float32)
    nonzero = np.abs(t[t != 0])
    if not nonzero.size or not np.isfinite(t).all():
        return None
    smallest = nonzero.min()
    for m in range(1, 256):
        s0 = np.float32(smallest / np.float32(m))
        for scale in (s0, np.nextafter(s0, np.float32(0)), np.nextafter(s0, np.float32(np.inf))):
            if not (np.isfinite(scale) and scale > 0):
                continue
            with np.errstate(over="ignore"):  # a huge ratio is no grid of bytes: refused below
                n = np.rint(t / scale)
            lo, hi = n.min(), n.max()
            if hi - lo > 255 or not np.array_equal(n.astype(np.float32) * scale, t):
                continue
            if lo >= -128 and hi <= 127:
                return n.astype(np.int8), np.float32(scale), np.int8(0)
            zero = np.uint8(-lo)  # 0 is in the table, so lo <= 0
            return (n - lo).astype(np.uint8), np.float32(scale), zero
    return None


def relative_gaps(positions: np.ndarray, dtype: np.dtype = np.dtype(np.uint8)) -> tuple[np.ndarray, np.ndarray]:
    """Strictly increasing flat ``positions`` as gaps of the unsigned ``dtype`` whose running sum
    gives them back: ``gaps[0]`` is the first position, ``gaps[i]`` the step from the previous
    entry. A step over the dtype's maximum ``M`` is split by filler entries (steps of ``M``, which
    land strictly between two real entries). Returns the gaps and, per gap entry, whether it is a
    real entry (not a filler)."""
    most = int(np.iinfo(dtype).max)
    step = np.diff(np.asarray(positions, dtype=np.int64), prepend=0)
    fillers = np.maximum(0, (step - 1) // most)  # the first step may be 0: no filler
    real_at = np.cumsum(fillers + 1) - 1
    gaps = np.full(int(real_at[-1]) + 1 if real_at.size else 0, most, dtype=dtype)
    gaps[real_at] = step - most * fillers
    real = np.zeros(gaps.size, dtype=bool)
    real[real_at] = True
    return gaps, real


def _sparse_gaps(numel: int, positions: np.ndarray, itemsize: int) -> np.dtype | None:
    """The gap dtype of :data:`GAP_DTYPES` with which a tensor of ``numel`` elements, nonzero at
    ``positions``, each value taking ``itemsize`` bytes, is smallest in ONNX as gaps and values;
    None when writing it densely is no larger. The file's choice does not carry over: its coded
    gaps cost a few bits, a byte here, so e.g. a 75%-dense factor of a low-rank chain is sparse
    in the file and dense in ONNX."""
    size, dtype = min(((relative_gaps(positions, d)[0].size * (d.itemsize + itemsize), i, d)
                       for i, d in enumerate(GAP_DTYPES)), key=lambda c: c[:2])[::2]
    return dtype if size + SPARSE_NODES_BYTES < numel * itemsize else None


def _half_exact(values: np.ndarray) -> bool:
    return bool(np.array_equal(values.astype(np.float16).astype(np.float32), values, equal_nan=True))


def _onnx_floats(g: Any, name: str, values: np.ndarray) -> str:
    """``values`` (float32) as a float32 initializer, or as float16 and a ``Cast`` when float16
    holds them exactly and that saves more than :data:`CAST_NODE_BYTES`; returns the float32 tensor."""
    values = np.asarray(values, dtype=np.float32)
    if 2 * values.size > CAST_NODE_BYTES and _half_exact(values):
        return g.cast(g.init(f"{name}/float16", values.astype(np.float16)), "float32")
    return g.init(name, values)


def _onnx_lookup(g: Any, name: str, symbols: np.ndarray, table: np.ndarray) -> str:
    """``table[symbols]`` (float32, the shape of ``symbols``): ``DequantizeLinear`` of one int8 or
    uint8 per symbol when the table is a uniform grid (:func:`uniform_grid`), else ``Gather`` of
    the table by the symbols (bytes, or uint16 past 256 entries; cast to int64, which ONNX's
    ``Gather`` wants)."""
    grid = uniform_grid(table)
    if grid is not None:
        q, scale, zero = grid
        ins = [g.init(f"{name}/q", q[symbols]), g.init(f"{name}/scale", np.array(scale)),
               g.init(f"{name}/zero_point", np.array(zero))]
        return g.node("DequantizeLinear", ins, f"{name}/values")
    idx = g.cast(g.init(f"{name}/indices", symbols.astype(index_dtype(len(table)))), "int64")
    return g.node("Gather", [_onnx_floats(g, f"{name}/table", table), idx], f"{name}/values", axis=0)


def _onnx_sparse(g: Any, name: str, shape: tuple[int, ...], positions: np.ndarray, gap_dtype: np.dtype,
                 values: Callable[[str, np.ndarray], str]) -> str:
    """A tensor of ``shape`` that is zero except at the flat ``positions``: gaps of ``gap_dtype``
    (:func:`relative_gaps`) summed by ``CumSum`` into positions, ``ScatterElements`` of the
    entries' values into ``ConstantOfShape`` zeros, reshaped. ``values(name, real)`` writes the
    float32 value of every gap entry (``real`` marks the entries that are not fillers, whose
    value must be 0) and returns its tensor."""

    def shape_of() -> str:
        return g.init(f"{name}/shape", np.array(shape, dtype=np.int64))

    if positions.size == 0:
        return g.node("ConstantOfShape", [shape_of()], name)
    gaps, real = relative_gaps(positions, gap_dtype)
    steps = g.cast(g.init(f"{name}/gaps", gaps), "int64")
    pos = g.node("CumSum", [steps, g.init(f"{name}/axis", np.array(0, dtype=np.int64))], f"{name}/positions")
    zeros = g.node("ConstantOfShape", [g.init(f"{name}/numel", np.array([math.prod(shape)], dtype=np.int64))],
                   f"{name}/zeros")
    flat = g.node("ScatterElements", [zeros, pos, values(name, real)], f"{name}/flat", axis=0)
    return flat if len(shape) == 1 else g.node("Reshape", [flat, shape_of()], name)


def _csr(shape: tuple[int, ...], positions: np.ndarray, values: np.ndarray, codebook: np.ndarray | None) -> CSRMatrix:
    rows, cols = _rows_cols(shape)
    row_of = positions // max(cols, 1)
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of, minlength=rows), out=indptr[1:])
    return CSRMatrix((rows, cols), indptr, positions - row_of * cols, values, codebook)


@dataclass(frozen=True, eq=False)
class IntGrid:
    """A tensor as small integers on a uniform grid per group: element ``i`` of group ``g`` (a
    contiguous run of ``group`` elements in row-major order, inside one row or the whole tensor)
    is ``scale[g] * (float32(q[i]) - offset[g])``, computed in float32 with one rounding (the
    subtraction is exact: ``q`` < 256 and ``offset`` a whole or half number).

    The view a C kernel needs to keep quantised weights as their ``bits``-wide integers (Jacob et
    al. 2018) instead of float32: it covers symmetric and asymmetric integer grids (offset = the
    zero point), binary ``±s`` (scale ``2s``, offset 0.5) and ternary ``{-s, 0, s}`` (offset 1).
    ``q`` is uint8 of the tensor's shape, each below ``2**bits`` (``bits`` 1..8); ``scale`` and
    ``offset`` are float32, one per group."""

    q: np.ndarray
    bits: int
    group: int
    scale: np.ndarray
    offset: np.ndarray

    def to_dense(self) -> np.ndarray:
        """The float32 values (the typed tensor's :meth:`~CompressedTensor.to_dense`, bit for bit)."""
        q = self.q.reshape(-1, self.group).astype(np.float32)
        return ((q - self.offset.astype(np.float32)[:, None]) * self.scale.astype(np.float32)[:, None]).reshape(
            self.q.shape)


class CompressedTensor:
    """Base of the typed tensors: a shape, a dense expansion, a CSR view and (for integer grids)
    a grid view."""

    tensor_data_names: ClassVar[tuple[str, ...]] = ()
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def to_dense(self) -> np.ndarray:
        """The dense float32 tensor, equal bit for bit to what ``decode_tensor`` returns."""
        raise NotImplementedError(f"{type(self).__name__} must implement to_dense()")

    def dequantize(self) -> np.ndarray:
        """Same as :meth:`to_dense` (torchao's name for it)."""
        return self.to_dense()

    def csr(self) -> CSRMatrix:
        """The nonzero weights by rows of the tensor flattened to 2-D."""
        raise NotImplementedError(f"{type(self).__name__} must implement csr()")

    def grid(self) -> IntGrid | None:
        """The tensor as integers on a per-group uniform grid (:class:`IntGrid`), or None when it is
        not one (the default). The C engine keeps such a tensor as its bit-packed integers."""
        return None

    def to_onnx(self, g: Any, name: str) -> str:
        """Write the tensor in its compact ONNX form into ``g`` (the writer protocol of
        :class:`deepshrink.graph.ops.base.OnnxGraph`: ``node``, ``init``, ``cast``), with nodes
        and initializers named from ``name``; returns the name of the float32 tensor (of
        :attr:`shape`) that holds the dense value, equal to :meth:`to_dense`."""
        raise NotImplementedError(f"{type(self).__name__} must implement to_onnx()")


@dataclass(frozen=True, eq=False)
class DenseTensor(CompressedTensor):
    """Every element stored (the ``raw`` encoding): ``values`` is float32 of the tensor's shape."""

    tensor_data_names: ClassVar[tuple[str, ...]] = ("values",)

    values: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return tuple(self.values.shape)

    def to_dense(self) -> np.ndarray:
        return self.values

    def csr(self) -> CSRMatrix:
        flat = np.ascontiguousarray(self.values, np.float32).reshape(-1)
        positions = np.flatnonzero(flat.view(np.uint32) != 0)  # -0.0 is kept: the view is bit-exact
        return _csr(self.shape, positions, flat[positions], None)

    def to_onnx(self, g: Any, name: str) -> str:
        """A float32 initializer (float16 and a Cast when that is exact and smaller)."""
        return _onnx_floats(g, name, self.values)


@dataclass(frozen=True, eq=False)
class CodebookTensor(CompressedTensor):
    """One codebook index per element (``codebook/dense``): ``indices`` (uint8/uint16, the
    tensor's shape) into ``codebook`` (float32, K shared values); index K means zero."""

    tensor_data_names: ClassVar[tuple[str, ...]] = ("indices", "codebook")

    indices: np.ndarray
    codebook: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return tuple(self.indices.shape)

    @property
    def table(self) -> np.ndarray:
        """The codebook with the zero of index K appended: ``table[indices]`` is the tensor."""
        return np.append(self.codebook, np.float32(0.0))

    def to_dense(self) -> np.ndarray:
        return self.table[self.indices]

    def csr(self) -> CSRMatrix:
        flat = self.indices.reshape(-1)
        positions = np.flatnonzero(flat != len(self.codebook))
        return _csr(self.shape, positions, flat[positions], self.codebook)

    def to_onnx(self, g: Any, name: str) -> str:
        """``Gather(table, indices)``: one byte per element (uint16 past 256 table entries), or
        ``DequantizeLinear`` of one int8/uint8 per element when the table is a uniform grid."""
        return _onnx_lookup(g, name, self.indices, self.table)


@dataclass(frozen=True, eq=False)
class SparseCodebookTensor(CompressedTensor):
    """Shared values at sparse positions (``codebook/sparse``): the flat row-major ``positions``
    (int64, strictly increasing) of the entries, each entry's codebook index ``indices``
    (uint8/uint16, < K) and the ``codebook`` (float32, K values). Everything else is zero."""

    tensor_data_names: ClassVar[tuple[str, ...]] = ("positions", "indices", "codebook")

    shape: tuple[int, ...]
    positions: np.ndarray
    indices: np.ndarray
    codebook: np.ndarray

    @property
    def nnz(self) -> int:
        return int(self.positions.size)

    def to_dense(self) -> np.ndarray:
        out = np.zeros(self.numel, dtype=np.float32)
        out[self.positions] = self.codebook[self.indices]
        return out.reshape(self.shape)

    def csr(self) -> CSRMatrix:
        return _csr(self.shape, self.positions, self.indices, self.codebook)

    def to_onnx(self, g: Any, name: str) -> str:
        """Gaps (bytes, or uint16 when that is smaller) and one byte (codebook index, or grid
        value) per entry, scattered into zeros; or, when that is no smaller, the dense form of
        :class:`CodebookTensor`."""
        k = len(self.codebook)
        gap_dtype = _sparse_gaps(self.numel, self.positions, index_dtype(k + 1).itemsize)
        if gap_dtype is None:
            symbols = np.full(self.numel, k, dtype=index_dtype(k + 1))
            symbols[self.positions] = self.indices
            return CodebookTensor(symbols.reshape(self.shape), self.codebook).to_onnx(g, name)
        table = np.append(self.codebook, np.float32(0.0))  # fillers take symbol K: zero

        def values(name: str, real: np.ndarray) -> str:
            symbols = np.full(real.size, len(self.codebook), dtype=np.int64)
            symbols[real] = self.indices
            return _onnx_lookup(g, name, symbols, table)

        return _onnx_sparse(g, name, self.shape, self.positions, gap_dtype, values)


@dataclass(frozen=True, eq=False)
class SparseTensor(CompressedTensor):
    """Float values at sparse positions (``float/sparse``: pruned, not shared): flat row-major
    ``positions`` (int64, strictly increasing) and their float32 ``values``."""

    tensor_data_names: ClassVar[tuple[str, ...]] = ("positions", "values")

    shape: tuple[int, ...]
    positions: np.ndarray
    values: np.ndarray

    @property
    def nnz(self) -> int:
        return int(self.positions.size)

    def to_dense(self) -> np.ndarray:
        out = np.zeros(self.numel, dtype=np.float32)
        out[self.positions] = self.values
        return out.reshape(self.shape)

    def csr(self) -> CSRMatrix:
        return _csr(self.shape, self.positions, self.values, None)

    def to_onnx(self, g: Any, name: str) -> str:
        """Gaps (bytes, or uint16 when that is smaller) and the float values (float16 when
        exact), scattered into zeros; or, when that is no smaller, the dense form of
        :class:`DenseTensor`."""
        gap_dtype = _sparse_gaps(self.numel, self.positions, 2 if _half_exact(self.values) else 4)
        if gap_dtype is None:
            return DenseTensor(self.to_dense()).to_onnx(g, name)

        def values(name: str, real: np.ndarray) -> str:
            entries = np.zeros(real.size, dtype=np.float32)
            entries[real] = self.values
            return _onnx_floats(g, f"{name}/values", entries)

        return _onnx_sparse(g, name, self.shape, self.positions, gap_dtype, values)
