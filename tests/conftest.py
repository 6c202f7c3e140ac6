"""Shared fixtures: small real Fashion-MNIST subsets and tiny trained models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from deepshrink.data import load_dataset

FASHION = Path(os.environ.get("DEEPSHRINK_DATA", "/usr/share/datasets")) / "fashion-mnist"


def _require_fashion() -> None:
    if not (FASHION / "train-images-idx3-ubyte.gz").exists() and not (FASHION / "train-images-idx3-ubyte").exists():
        pytest.skip("Fashion-MNIST is not installed (make data installs dataset-fashion-mnist)")


@pytest.fixture(scope="session")
def fashion():
    """The real Fashion-MNIST with a 5000-sample validation split."""
    _require_fashion()
    return load_dataset("fashion-mnist", val_size=5000, seed=0)


@pytest.fixture(scope="session")
def fashion_small(fashion):
    """A small real subset: 3000 train, 1000 val, 1000 test."""
    return fashion.subset(3000, 1000, 1000, seed=0)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    torch.manual_seed(0)
