"""Shared helpers of the engine tests: typed compressed tensors of every kind, the compiled
kernels (skipping when no C compiler exists)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from deepshrink.engine import native
from deepshrink.storage.tensors import CodebookTensor, DenseTensor, SparseCodebookTensor, SparseTensor

TYPES = ("dense", "codebook", "sparse-codebook", "sparse")


def typed_tensor(kind: str, shape: tuple[int, ...], density: float, seed: int = 0, k: int = 31):
    """A typed tensor of ``kind`` (one of :data:`TYPES`) with about ``density`` nonzeros."""
    rng = np.random.default_rng(seed)
    numel = int(np.prod(shape))
    positions = np.flatnonzero(rng.random(numel) < density)
    codebook = rng.standard_normal(k).astype(np.float32)
    if kind == "dense":
        flat = np.zeros(numel, np.float32)
        flat[positions] = rng.standard_normal(len(positions))
        return DenseTensor(flat.reshape(shape))
    if kind == "codebook":
        idx = np.full(numel, k, np.uint8 if k < 256 else np.uint16)
        idx[positions] = rng.integers(0, k, len(positions))
        return CodebookTensor(idx.reshape(shape), codebook)
    if kind == "sparse-codebook":
        syms = rng.integers(0, k, len(positions)).astype(np.uint8 if k <= 256 else np.uint16)
        return SparseCodebookTensor(tuple(shape), positions.astype(np.int64), syms, codebook)
    return SparseTensor(tuple(shape), positions.astype(np.int64), rng.standard_normal(len(positions)).astype(np.float32))


def need_cc() -> None:
    if shutil.which("cc") is None and native.compiler() is None:
        pytest.skip("no C compiler (cc, gcc or clang) on this machine")


@pytest.fixture(scope="session")
def lib():
    """The compiled kernels; the test is skipped when they cannot be built."""
    need_cc()
    kernels = native.load()
    if kernels is None:
        pytest.skip(f"the C kernels cannot be built here: {native.reason()}")
    return kernels


@pytest.fixture(scope="session")
def make_typed():
    """:func:`typed_tensor`."""
    return typed_tensor
