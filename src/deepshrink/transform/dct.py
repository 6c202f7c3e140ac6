"""Blockwise orthonormal DCT of weight tensors, in numpy (storage) and torch (training).

A weight of shape ``S`` is seen as the 2-D matrix ``(prod(S[:-1]), S[-1])`` and cut into blocks
of ``(bh, bw)``, zero-padded at the bottom and right edges. For a 2-D convolution the block is
the ``kh × kw`` kernel (:func:`kernel_block`), so the blocks are exactly the kernels (CNNpack,
Wang et al. 2016, transforms each kernel); for a fully connected weight it is ``B × B`` over the
matrix, as JPEG does with an image. The coefficients are kept block-major, ``(blocks, bh, bw)``
with the blocks in row-major order of the block grid, so that a block's low frequencies are
next to each other in the flat order the file's relative-index layout codes.

The transform is the type-II DCT with ``norm="ortho"`` in each block dimension
(:func:`scipy.fft.dctn`): ``X = Dh · x · Dwᵀ`` with the orthonormal DCT matrices, and the inverse
is ``x = Dhᵀ · X · Dw``. The inverse used for storage (:func:`idct_blocks`) computes in float64
with ``numpy.einsum`` loops (no BLAS, whose summation order may depend on threads) and rounds
once to float32: the stage and the loader call the same function on the same coefficients, so
the weight a stage leaves equals the decoded one bit for bit, and a last-bit difference of
another machine's float64 arithmetic would almost never survive the rounding to float32.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

#: Largest block side (coefficients per block: at most 64 × 64; work per weight: at most 128 products).
MAX_BLOCK = 64

#: A block setting: ``B`` (a ``B × B`` tile) or ``(bh, bw)``.
Block = int | tuple[int, int]


def kernel_block(shape: tuple[int, ...], block: Block) -> tuple[int, int]:
    """The block of a weight of ``shape``: the ``kh × kw`` kernel of a 2-D (or higher)
    convolution, the length-``k`` kernel of a 1-D convolution (one row), and otherwise ``block ×
    block`` (or ``bh × bw`` for a pair) clipped to the matrix (a block larger than the matrix
    would only add padding). A ``1 × B`` block of a fully connected weight transforms runs of one
    output neuron's input weights only: a square tile mixes unrelated neurons, whose weights
    are not correlated, while neighbouring inputs (pixels of an image row) often are."""
    if len(shape) >= 4:
        return int(shape[-2]), int(shape[-1])
    if len(shape) == 3:
        return 1, int(shape[-1])
    bh, bw = (block, block) if isinstance(block, int) else block
    rows, cols = matrix_shape(shape)
    return max(1, min(bh, rows)), max(1, min(bw, cols))


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The 2-D view of a weight: all dimensions but the last by the last (a 1-D weight is a row)."""
    if not shape:
        return 1, 1
    return math.prod(shape[:-1]), int(shape[-1])


def coefficient_shape(shape: tuple[int, ...], block: tuple[int, int]) -> tuple[int, int, int]:
    """``(blocks, bh, bw)``: the block-major coefficient array of a weight of ``shape``."""
    (rows, cols), (bh, bw) = matrix_shape(shape), block
    return math.ceil(rows / bh) * math.ceil(cols / bw), bh, bw


@lru_cache(maxsize=128)
def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal type-II DCT matrix ``D`` (float64, ``n × n``): ``D @ x`` is
    ``scipy.fft.dct(x, norm="ortho")``, and ``D.T`` is its inverse."""
    k = np.arange(n, dtype=np.float64)[:, None]
    i = np.arange(n, dtype=np.float64)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    d.setflags(write=False)
    return d


def _grid(shape: tuple[int, ...], block: tuple[int, int]) -> tuple[int, int, int, int]:
    (rows, cols), (bh, bw) = matrix_shape(shape), block
    return rows, cols, math.ceil(rows / bh), math.ceil(cols / bw)


def to_blocks(weight: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """The weight's zero-padded 2-D view cut into ``(blocks, bh, bw)``, block-major."""
    shape = tuple(weight.shape)
    rows, cols, gr, gc = _grid(shape, block)
    bh, bw = block
    padded = np.zeros((gr * bh, gc * bw), dtype=np.float64)
    padded[:rows, :cols] = np.asarray(weight, dtype=np.float64).reshape(rows, cols)
    return padded.reshape(gr, bh, gc, bw).transpose(0, 2, 1, 3).reshape(gr * gc, bh, bw)


def from_blocks(blocks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`to_blocks`: the blocks put back on the grid, cropped to ``shape``."""
    _, bh, bw = blocks.shape
    rows, cols, gr, gc = _grid(shape, (bh, bw))
    padded = blocks.reshape(gr, gc, bh, bw).transpose(0, 2, 1, 3).reshape(gr * bh, gc * bw)
    return padded[:rows, :cols].reshape(shape)


def dct_blocks(weight: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """The float64 DCT coefficients ``(blocks, bh, bw)`` of ``weight`` (see the module doc)."""
    dh, dw = dct_matrix(block[0]), dct_matrix(block[1])
    return np.einsum("ki,bij,lj->bkl", dh, to_blocks(weight, block), dw, optimize=False)


def idct_blocks(coefficients: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 weight of ``shape`` from its coefficients ``(blocks, bh, bw)``: computed in
    float64 by fixed-order loops, rounded once (the one inverse of storage: see the module doc)."""
    c = np.asarray(coefficients, dtype=np.float64)
    dh, dw = dct_matrix(c.shape[1]), dct_matrix(c.shape[2])
    x = np.einsum("ki,bkl->bil", dh, c, optimize=False)
    x = np.einsum("bil,lj->bij", x, dw, optimize=False)
    return np.ascontiguousarray(from_blocks(x, tuple(shape)), dtype=np.float32)


def idct_torch(coefficients: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """:func:`idct_blocks` in torch, as matrix products that autograd differentiates (the
    training path: a fine-tuned table of coefficients gets the gradient of the weight through the
    orthonormal inverse transform, ``∂L/∂X = Dh · ∂L/∂x · Dwᵀ``)."""
    nb, bh, bw = coefficients.shape
    rows, cols, gr, gc = _grid(tuple(shape), (bh, bw))
    dh = torch.tensor(dct_matrix(bh), dtype=coefficients.dtype)
    dw = torch.tensor(dct_matrix(bw), dtype=coefficients.dtype)
    x = dh.T @ coefficients @ dw
    x = x.reshape(gr, gc, bh, bw).permute(0, 2, 1, 3).reshape(gr * bh, gc * bw)
    return x[:rows, :cols].reshape(shape)
