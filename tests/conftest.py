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


@pytest.fixture(scope="session")
def make_recipe():
    """``make_recipe(sparsity=0.9, bits=5, ...)``: a quick prune → share → code recipe (one step,
    few epochs) for tests that need a real run, not a tuned one."""
    from deepshrink.recipes import Recipe

    def make(*, sparsity: float = 0.9, last: float | None = None, bits: int = 5, retrain: int = 1,
             finetune: int = 1, coder: str = "huffman", name: str = "quick") -> Recipe:
        prune = {"_default": {"sparsity": sparsity}, **({"_last": {"sparsity": last}} if last is not None else {})}
        return Recipe.from_dict({"name": name, "stages": [
            {"kind": "prune", "steps": 1, "retrain": {"epochs": retrain}, "layers": prune},
            {"kind": "share", "finetune": {"epochs": finetune}, "layers": {"_default": {"bits": bits}}},
            {"kind": "code", "coder": coder},
        ]})

    return make


@pytest.fixture(scope="session")
def trained_mlp(fashion_small):
    """LeNet-300-100 trained for 3 epochs on :func:`fashion_small` (treat it as read-only)."""
    from deepshrink.models import build_model
    from deepshrink.train import TrainConfig, fit

    torch.manual_seed(0)
    model = build_model("lenet-300-100")
    fit(model, fashion_small.tensors("train"), fashion_small.tensors("val"), TrainConfig(epochs=3, seed=0),
        progress=False)
    return model.eval()
