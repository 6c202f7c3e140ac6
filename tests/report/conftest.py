"""Fixtures of the report tests: a small LeNet-300-100 trained on real Fashion-MNIST, an analysis
document measured on it, and a compressed file of it with hostile strings in its recipe name and meta."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import deepshrink as ds

sys.path.insert(0, str(Path(__file__).parent))
from report_helpers import HOSTILE, analysis_doc  # noqa: E402


@pytest.fixture(scope="session")
def small_data(fashion):
    """Real Fashion-MNIST, cut down: 2000 training, 300 validation, 300 test samples."""
    return fashion.subset(2000, 300, 300, seed=0)


@pytest.fixture(scope="session")
def lenet(trained_mlp):
    """The root conftest's trained LeNet-300-100 (read-only)."""
    return trained_mlp


@pytest.fixture(scope="session")
def doc(lenet, small_data):
    """A measured analysis document, its first layer named :data:`HOSTILE`, the model too."""
    return analysis_doc(lenet, small_data.tensors("val"), model_name=HOSTILE, data_name="fashion-mnist & co",
                        extra_layer_name=HOSTILE)


@pytest.fixture(scope="session")
def hostile_recipe(tmp_path_factory) -> Path:
    """A quick prune, share and code recipe whose name is :data:`HOSTILE`."""
    p = tmp_path_factory.mktemp("recipe") / "hostile.toml"
    p.write_text(
        f"name = {json.dumps(HOSTILE)}\n"
        'description = "prune, share, code"\n[[stages]]\nkind = "prune"\nsteps = 1\n[stages.retrain]\nepochs = 1\n'
        '[stages.layers]\n_default = { sparsity = 0.8 }\n'
        '[[stages]]\nkind = "share"\n[stages.finetune]\nepochs = 1\n[stages.layers]\n_default = { bits = 4 }\n'
        '[[stages]]\nkind = "code"\n'
    )
    return p


@pytest.fixture(scope="session")
def compressed(lenet, small_data, hostile_recipe):
    """A :class:`~deepshrink.pipeline.CompressionResult` of the small LeNet, its recipe and meta hostile."""
    return ds.compress(lenet, small_data, ds.load_recipe(str(hostile_recipe)), progress=False,
                       meta={"model": HOSTILE, "data": "fashion-mnist", "seed": 0})


@pytest.fixture(scope="session")
def weights(lenet, tmp_path_factory) -> Path:
    """The small LeNet's weights as a safetensors file (for ``compress --weights``)."""
    p = tmp_path_factory.mktemp("weights") / "lenet.safetensors"
    ds.save_weights(lenet, p)
    return p
