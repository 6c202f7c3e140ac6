"""Helpers of the engine tests (imported by conftest.py and the test modules)."""

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


STRICT = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Werror")
"""The flags the generated engine must compile cleanly with."""
SANITIZE = ("-std=c99", "-O1", "-g", "-Wall", "-Werror", "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all", "-fno-omit-frame-pointer")


def compress_weights(model, sparsity: float = 0.9, bits: int = 5, skip=()) -> None:
    """Prune every conv/linear weight of ``model`` to ``sparsity`` (by magnitude) and share the
    kept values among ``2**bits - 1`` (uniform codebook), in place: what Deep Compression stores."""
    import torch
    from torch import nn

    with torch.no_grad():
        for name, m in model.named_modules():
            if not isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) or name in skip:
                continue
            w = m.weight
            keep = w.abs() > w.abs().flatten().kthvalue(max(1, int(sparsity * w.numel()))).values
            if sparsity == 0:
                keep = torch.ones_like(w, dtype=torch.bool)
            kept = w[keep]
            book = torch.linspace(float(kept.min()), float(kept.max()), 2**bits - 1)
            shared = book[(kept[:, None] - book[None]).abs().argmin(1)]
            w.zero_()
            w[keep] = shared


def random_quant(shape, levels="int", bits=4, granularity="channel", symmetric=True, seed=0, group_size=8, half=False):
    """A random QuantTensor of ``shape`` (zeros included): per-tensor, per-channel or per-group
    scales (rounded to float16 with ``half``), zero points when not ``symmetric``."""
    import math

    from deepshrink.quant.encoding import QuantTensor, alphabet
    from deepshrink.storage.tensors import _rows_cols

    rng = np.random.default_rng(seed)
    numel = math.prod(shape)
    _, cols = _rows_cols(shape)
    group = {"tensor": numel, "channel": cols, "group": group_size}[granularity]
    q = rng.integers(0, alphabet(levels, bits), size=shape).astype(np.uint8)
    scale = (rng.random(numel // group) * 0.1 + 1e-3).astype(np.float32)
    if half:
        scale = scale.astype(np.float16).astype(np.float32)
    zero = None if symmetric else rng.integers(0, 1 << bits, size=numel // group).astype(np.uint8)
    return QuantTensor(q, bits, levels, group, scale, zero)
