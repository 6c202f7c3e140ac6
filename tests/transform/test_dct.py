"""The blockwise DCT: scipy's transform, exact inverse, torch inverse for training."""

import numpy as np
import pytest
import scipy.fft
import torch

from deepshrink.transform.dct import (
    coefficient_shape,
    dct_blocks,
    dct_matrix,
    idct_blocks,
    idct_torch,
    kernel_block,
    to_blocks,
)


@pytest.mark.parametrize("shape,block", [((30, 45), (8, 8)), ((16, 16), (8, 8)), ((6, 3, 5, 5), (5, 5)),
                                         ((4, 2, 3), (1, 3)), ((7,), (1, 4))])
def test_forward_is_scipys_orthonormal_dct_ii_of_each_padded_block(shape, block):
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    c = dct_blocks(w, block)
    assert c.shape == coefficient_shape(shape, block)
    np.testing.assert_allclose(c, scipy.fft.dctn(to_blocks(w, block), axes=(1, 2), type=2, norm="ortho"), atol=1e-12)
    np.testing.assert_allclose(idct_blocks(c, shape), w, atol=1e-6)  # cropped back to the weight


def test_torch_inverse_equals_scipys_idct_and_passes_gradients():
    rng = np.random.default_rng(1)
    c = rng.standard_normal((4 * 6, 8, 8))
    want = scipy.fft.idctn(c, axes=(1, 2), type=2, norm="ortho").reshape(4, 6, 8, 8).transpose(0, 2, 1, 3)
    want = want.reshape(32, 48)[:30, :45]
    t = torch.tensor(c, dtype=torch.float32, requires_grad=True)
    got = idct_torch(t, (30, 45))
    np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-5)
    np.testing.assert_allclose(idct_torch(torch.tensor(c), (30, 45)).numpy(), want, atol=1e-12)
    got.sum().backward()
    # orthonormal: the gradient of a padded position is zero only if the block is all padding
    assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_inverse_is_deterministic_and_float32():
    c = np.random.default_rng(2).standard_normal((10, 5, 5))
    a, b = idct_blocks(c, (2, 5, 5, 5)), idct_blocks(c.copy(), (2, 5, 5, 5))
    assert a.dtype == np.float32 and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_blocks_of_kernels_and_matrices():
    assert kernel_block((50, 20, 5, 5), 8) == (5, 5)
    assert kernel_block((6, 4, 3), 8) == (1, 3)
    assert kernel_block((10, 100), 8) == (8, 8)
    assert kernel_block((3, 100), 8) == (3, 8)  # no more padding than the matrix needs
    assert kernel_block((300, 784), (1, 28)) == (1, 28)  # one image row of a 784-input layer
    assert kernel_block((10, 100), [2, 200]) == (2, 100)  # a pair, clipped to the matrix too
    assert kernel_block((50, 20, 5, 5), (1, 16)) == (5, 5)  # a convolution's block is its kernel
    assert coefficient_shape((10, 100), (8, 8)) == (2 * 13, 8, 8)
    d = dct_matrix(8)
    np.testing.assert_allclose(d @ d.T, np.eye(8), atol=1e-14)
