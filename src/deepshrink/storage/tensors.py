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

Factorised (SVD, SLR, Tucker, CP) layers need no type of their own: the file stores them as a
chain of ordinary layers whose weights are ordinary tensors (see docs/format.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


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


def _csr(shape: tuple[int, ...], positions: np.ndarray, values: np.ndarray, codebook: np.ndarray | None) -> CSRMatrix:
    rows, cols = _rows_cols(shape)
    row_of = positions // max(cols, 1)
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of, minlength=rows), out=indptr[1:])
    return CSRMatrix((rows, cols), indptr, positions - row_of * cols, values, codebook)


class CompressedTensor:
    """Base of the typed tensors: a shape, a dense expansion and a CSR view."""

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
        flat = self.values.reshape(-1)
        positions = np.flatnonzero(flat)
        return _csr(self.shape, positions, flat[positions], None)


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
