"""Typed tensors of transform-coded weights: DCT coefficients (CNNpack) and hashed buckets
(HashedNets, FreshNets). See :mod:`deepshrink.storage.tensors` for the protocol.

Neither has a sparse or codebook structure in the weight domain: every weight is (in general)
nonzero and distinct, so :meth:`csr` is the dense matrix and :meth:`to_onnx` writes the dense
initializer. A compact ONNX form would be possible but is not smaller where it matters: hashed
weights need an index per weight for ``Gather`` (as large as the weights themselves), and the
inverse DCT in ONNX ``MatMul`` would not equal :meth:`to_dense` bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from deepshrink.storage.tensors import CompressedTensor, CSRMatrix, DenseTensor, SparseCodebookTensor
from deepshrink.transform.dct import coefficient_shape, idct_blocks
from deepshrink.transform.hashing import expand


class _DenseView(CompressedTensor):
    """CSR and ONNX of a tensor whose weights are dense: those of its :meth:`to_dense`."""

    def csr(self) -> CSRMatrix:
        """The dense values (exact zeros dropped, as :class:`DenseTensor` does)."""
        return DenseTensor(self.to_dense()).csr()

    def to_onnx(self, g: Any, name: str) -> str:
        """The dense float32 initializer (see the module doc for why not a compact form)."""
        return DenseTensor(self.to_dense()).to_onnx(g, name)


@dataclass(frozen=True, eq=False)
class DCTTensor(_DenseView):
    """A weight of ``shape`` stored as its blockwise DCT coefficients (``dct/sparse``):
    ``coefficients`` is a :class:`SparseCodebookTensor` of shape ``(blocks, bh, bw)`` (the
    block-major layout of :mod:`deepshrink.transform.dct`: kept coefficients k-means shared, the
    dropped ones zero); the weight is the inverse DCT of every block, cropped to ``shape``."""

    tensor_data_names: ClassVar[tuple[str, ...]] = ("positions", "indices", "codebook")

    shape: tuple[int, ...]
    coefficients: SparseCodebookTensor

    def __post_init__(self) -> None:
        _, bh, bw = self.coefficients.shape
        if tuple(self.coefficients.shape) != coefficient_shape(self.shape, (bh, bw)):
            raise ValueError(f"coefficients of shape {self.coefficients.shape} do not tile a weight of shape {self.shape}")

    @property
    def block(self) -> tuple[int, int]:
        return tuple(self.coefficients.shape[1:])  # type: ignore[return-value]

    @property
    def positions(self) -> np.ndarray:
        """Flat positions of the kept coefficients in the block-major array."""
        return self.coefficients.positions

    @property
    def indices(self) -> np.ndarray:
        return self.coefficients.indices

    @property
    def codebook(self) -> np.ndarray:
        return self.coefficients.codebook

    @property
    def kept(self) -> int:
        """Coefficients stored."""
        return self.coefficients.nnz

    def to_dense(self) -> np.ndarray:
        return idct_blocks(self.coefficients.to_dense(), self.shape)


@dataclass(frozen=True, eq=False)
class HashedTensor(_DenseView):
    """A weight of ``shape`` whose hashed values are ``ξ(i) · buckets[h(i)]``
    (:mod:`deepshrink.transform.hashing`, ``ξ = 1`` without ``sign``): the block-major DCT
    coefficients of the weight with ``block`` (FreshNets, Chen et al. 2016), transformed back by
    :func:`~deepshrink.transform.dct.idct_blocks`; with ``block = (1, 1)`` (the DCT of one value is
    itself) the weights themselves, in row-major order (HashedNets)."""

    tensor_data_names: ClassVar[tuple[str, ...]] = ("buckets",)

    shape: tuple[int, ...]
    buckets: np.ndarray
    seed: int
    sign: bool = True
    block: tuple[int, int] = (1, 1)

    @property
    def in_weight_domain(self) -> bool:
        return tuple(self.block) == (1, 1)

    def to_dense(self) -> np.ndarray:
        cshape = coefficient_shape(self.shape, tuple(self.block))
        values = expand(self.buckets, self.seed, int(np.prod(cshape)), self.sign)
        if self.in_weight_domain:  # the identity transform, skipped (exactly what it computes)
            return values.reshape(self.shape)
        return idct_blocks(values.reshape(cshape), self.shape)
