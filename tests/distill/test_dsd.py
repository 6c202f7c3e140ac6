"""The ``dsd`` stage: dense retraining after pruning releases the pruned weights, composes with
the stages after it, and its dense result can be compressed again."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import deepshrink as ds
from deepshrink.errors import ConfigError
from deepshrink.recipes import Recipe

PRUNE = {"kind": "prune", "steps": 1, "retrain": {"epochs": 1}, "layers": {"_default": {"sparsity": 0.7}}}


def recipe(*stages: dict) -> Recipe:
    return Recipe.from_dict({"name": "t", "stages": list(stages)})


@pytest.fixture(scope="module")
def data(fashion):
    return fashion.subset(800, 300, 300, seed=2)


@pytest.fixture(scope="module")
def model(data):
    torch.manual_seed(0)
    m = ds.build_model("lenet-300-100")
    ds.fit(m, data.tensors("train"), data.tensors("val"), ds.TrainConfig(epochs=3, seed=0), progress=False)
    return m


@pytest.fixture(scope="module")
def dsd(model, data):
    r = recipe(PRUNE, {"kind": "dsd", "retrain": {"epochs": 2, "lr": 3e-4}, "layers": {"fc3": {"release": False}}})
    return ds.compress(model, data, r, progress=False)


def test_dsd_releases_the_pruned_weights(dsd):
    detail = dsd.stages[2].detail
    assert [s.stage for s in dsd.stages] == ["baseline", "prune", "dsd"]
    assert set(detail["released"]) == {"fc1", "fc2"}  # fc3 is not released
    assert detail["released"]["fc1"] == pytest.approx(0.7 * 784 * 300, abs=2)
    assert detail["regrown"]["fc1"] > 0.95 * detail["released"]["fc1"]  # zeros before, trained now
    w = dsd.model.fc1.weight
    assert float((w == 0).float().mean()) < 0.01
    assert float((dsd.model.fc3.weight == 0).float().mean()) == pytest.approx(0.7, abs=0.01)  # kept sparse
    assert "warning" not in detail
    assert detail["val_accuracy_after"] >= detail["val_accuracy_before"]


def test_the_dense_result_compresses_again(dsd, data):
    dc = ds.load_recipe("deep-compression")  # its stages as they are, with one epoch per (re)training
    quick = Recipe(dc.name, tuple(replace(s, **{t: replace(getattr(s, t), epochs=1) for t in s.trainings},
                                          **({"steps": 1} if s.kind == "prune" else {})) for s in dc.stages))
    again = ds.compress(dsd.model, data, quick, progress=False)
    assert again.baseline.test_accuracy == pytest.approx(dsd.file_accuracy)
    assert again.ratio > 20 and again.file_accuracy > 0.4


def test_prune_dsd_share_code_composes(model, data):
    r = recipe(PRUNE, {"kind": "dsd", "retrain": {"epochs": 1}},
               {"kind": "share", "finetune": {"epochs": 1}, "layers": {"_default": {"bits": 4}}},
               {"kind": "code", "coder": "huffman"})
    result = ds.compress(model, data, r, progress=False)
    assert [s.stage for s in result.stages] == ["baseline", "prune", "dsd", "share", "code"]
    assert all(0 < row.codebook <= 16 and row.bits <= 4 for row in result.layers)
    assert result.ratio > 6 and result.file_accuracy > 0.6
    net = ds.load(result.data)
    assert ds.evaluate(net, data.tensors("test")) == pytest.approx(result.file_accuracy)


def test_dsd_without_pruning_says_so(model, data):
    result = ds.compress(model, data, recipe({"kind": "dsd", "retrain": {"epochs": 1}}), progress=False)
    detail = result.stages[1].detail
    assert detail["released"] == {"fc1": 0, "fc2": 0, "fc3": 0}
    assert "follows a prune stage" in detail["warning"]


def test_dsd_settings_are_checked():
    with pytest.raises(ConfigError, match="no layer is released"):
        recipe(PRUNE, {"kind": "dsd", "layers": {"_default": {"release": False}}}).stages[1].check(
            {"fc1": ds.recipes.Layer("linear")}, has_val=True)
    with pytest.raises(ConfigError, match="retrain: lr"):
        recipe({"kind": "dsd", "retrain": {"lr": 0}})
    with pytest.raises(ConfigError, match="order"):
        recipe({"kind": "dsd"}, PRUNE)


def test_the_builtin_dsd_recipe_prunes_then_retrains_dense():
    from deepshrink.pipeline.compress import check_recipe

    r = ds.load_recipe("dsd")
    assert [s.kind for s in r.stages] == ["prune", "dsd", "code"]
    prune, dsd = r.stages[0], r.stages[1]
    assert 0.5 <= prune.layers.resolve("fc1", "linear", ["fc1"])["sparsity"] <= 0.7
    assert dsd.retrain.lr == pytest.approx(prune.retrain.lr / 10)  # a tenth of the sparse phase's, as in the paper
    check_recipe(ds.build_model("lenet-300-100"), r)
