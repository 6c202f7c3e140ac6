"""The dct and hash stages: settings refused with the setting and its range, recipes that would
change a stored form refused before training, the forms the stages leave."""

import tomllib

import numpy as np
import pytest
import torch

import deepshrink as ds
from deepshrink.errors import ConfigError
from deepshrink.pipeline.compress import check_recipe
from deepshrink.recipes import Recipe
from deepshrink.recipes.stages import STAGES
from deepshrink.transform.stage import DCTStage, HashDomain, HashStage


def stage(kind, **kw):
    return Recipe.from_dict({"name": "t", "stages": [{"kind": kind, **kw}]}).stages[0]


@pytest.mark.parametrize("kind,settings,match", [
    ("dct", {"layers": {"_default": {"keep": 0}}}, r"keep .*\(0, 1\]"),
    ("dct", {"layers": {"_default": {"keep": 1.5}}}, r"keep .*\(0, 1\]"),
    ("dct", {"layers": {"_default": {"threshold": -1}}}, r"threshold .*\[0, 100\]"),
    ("dct", {"layers": {"_default": {"keep": 0.1, "threshold": 1}}}, "both keep and threshold"),
    ("dct", {"layers": {"_default": {"keep": 0.1, "bits": 0}}}, r"bits must be an integer in 1\.\.16"),
    ("dct", {"layers": {"_default": {"keep": 0.1, "bits": 17}}}, r"bits must be an integer in 1\.\.16"),
    ("dct", {"layers": {"_default": {"keep": 0.1, "block": 65}}}, r"block must be an integer in 1\.\.64"),
    ("dct", {"bits": 0}, r"dct: bits must be an integer in 1\.\.16"),
    ("dct", {"block": 0}, r"dct: block must be an integer in 1\.\.64"),
    ("dct", {"block": [1, 65]}, r"dct: block must be an integer in 1\.\.64 or a pair"),
    ("dct", {"layers": {"_default": {"keep": 0.1, "block": [1, 2, 3]}}}, r"block must be .* or a pair"),
    ("hash", {"block": [0, 8]}, r"hash: block must be an integer in 1\.\.64 or a pair"),
    ("dct", {"init": "kmeans++"}, "init must be one of"),
    ("hash", {"layers": {"_default": {"buckets": 0}}}, r"buckets must be an int ≥ 1"),
    ("hash", {"layers": {"_default": {"buckets": 1.5}}}, r"fraction in \(0, 1\]"),
    ("hash", {"layers": {"_default": {"buckets": 0.1, "domain": "fourier"}}}, "domain must be one of"),
    ("hash", {"layers": {"_default": {"buckets": 0.1, "block": 0}}}, r"block must be an integer in 1\.\.64"),
    ("hash", {"seed": -1}, r"seed must be an integer in 0\.\.4294967295"),
    ("hash", {"sign": "yes"}, "sign must be true or false"),
    ("hash", {"layers": {"_default": {"buckets": 0.1, "sign": 1}}}, "wrong type"),
])
def test_settings_out_of_range_name_the_setting_and_range(kind, settings, match):
    with pytest.raises(ConfigError, match=match):
        stage(kind, **settings)


def test_stages_round_trip_through_their_recipe_tables():
    for s in (stage("dct", bits=5, layers={"_linear": {"keep": 0.1, "block": 4}, "_conv": {"threshold": 0.5}}),
              stage("hash", seed=3, layers={"_linear": {"buckets": 0.125}, "_conv": {"buckets": 40, "domain": "dct"}})):
        assert type(s).parse(s.to_dict(), "again") == s
    pair = Recipe.from_dict({"name": "t", "stages": [{"kind": "dct", "block": [1, 16], "layers": {
        "_linear": {"keep": 0.1}, "_first": {"block": [1, 28]}}}]})
    assert pair.stages[0].block == (1, 16)  # a tuple: the stage stays hashable
    assert Recipe.from_dict(tomllib.loads(pair.to_toml())) == pair  # blocks written as TOML arrays
    assert ds.load_recipe("hashed").stages[0].layers.resolve("conv1", "conv", ["conv1", "fc1"])["domain"] is HashDomain.DCT


def test_buckets_above_the_layer_size_are_refused_before_training():
    model = ds.build_model("lenet-300-100")
    recipe = Recipe.from_dict({"name": "t", "stages": [{"kind": "hash", "layers": {"fc3": {"buckets": 1001}}}]})
    with pytest.raises(ConfigError, match=r"'fc3': buckets must be in 1\.\.1000"):
        check_recipe(model, recipe)
    dct = Recipe.from_dict({"name": "t", "stages": [{"kind": "hash", "layers": {"fc3": {"buckets": 1001,
                                                                                      "domain": "dct"}}}]})
    check_recipe(model, dct)  # 10 × 100 padded to 16 × 104 coefficients


def test_hash_then_dct_on_one_layer_is_refused_by_name_before_training(monkeypatch):
    model = ds.build_model("lenet-300-100")
    recipe = Recipe.from_dict({"name": "both", "stages": [
        {"kind": "hash", "layers": {"fc1": {"buckets": 0.1}}},
        {"kind": "dct", "layers": {"_linear": {"keep": 0.1}}}]})
    monkeypatch.setattr(HashStage, "run", lambda *a: pytest.fail("trained before refusing"))
    with pytest.raises(ConfigError, match=r"stage 2 \(dct\).*'fc1' is stored by the 'hash' stage"):
        check_recipe(model, recipe)
    # on different layers the two compose
    check_recipe(model, Recipe.from_dict({"name": "split", "stages": [
        {"kind": "hash", "layers": {"fc1": {"buckets": 0.1}}},
        {"kind": "dct", "layers": {"fc2": {"keep": 0.1}, "fc3": {"keep": 0.5}}}]}))


def test_share_before_hash_is_refused_and_quantize_before_hash_is_refused():
    model = ds.build_model("lenet-300-100")
    # hashing would replace the shared values (tests/recipes/test_stages.py has the general case)
    with pytest.raises(ConfigError, match="changed by the 'share' stage"):
        check_recipe(model, Recipe.from_dict({"name": "s", "stages": [
            {"kind": "share", "layers": {"_default": {"bits": 5}}},
            {"kind": "hash", "layers": {"_default": {"buckets": 0.1}}}]}))
    with pytest.raises(ConfigError, match="stored by the 'quantize' stage"):
        check_recipe(model, Recipe.from_dict({"name": "q", "stages": [
            STAGES["quantize"]().to_dict() | {"layers": {"fc1": {"bits": 8}}},
            {"kind": "hash", "layers": {"fc1": {"buckets": 0.1}}}]}))


def test_stage_kinds_and_orders():
    assert (DCTStage.kind, DCTStage.order, DCTStage.stores_form) == ("dct", 70, True)
    assert (HashStage.kind, HashStage.order, HashStage.stores_form) == ("hash", 65, True)
    with pytest.raises(ConfigError):  # dct (70) cannot come before hash (65)
        Recipe.from_dict({"name": "x", "stages": [{"kind": "dct", "layers": {"_default": {"keep": 0.1}}},
                                                  {"kind": "hash", "layers": {"_default": {"buckets": 0.1}}}]})


@pytest.fixture(scope="module")
def tiny(fashion_small):
    data = fashion_small.subset(400, 200, 200, seed=0)
    torch.manual_seed(0)
    model = ds.build_model("lenet-300-100")
    ds.fit(model, data.tensors("train"), data.tensors("val"), ds.TrainConfig(epochs=2, seed=0), progress=False)
    return model, data


def test_dct_stage_leaves_forms_equal_to_the_weights_and_fine_tunes(tiny):
    model, data = tiny
    recipe = Recipe.from_dict({"name": "t", "stages": [{"kind": "dct", "finetune": {"epochs": 2, "lr": 1e-3},
                                                       "layers": {"_linear": {"keep": 0.2, "bits": 5}}}]})
    result = ds.compress(model, data, recipe, progress=False)
    detail = result.stages[1].detail
    assert detail["layers"]["fc1"]["kept"] == round(0.2 * 38 * 98 * 64)
    assert detail["layers"]["fc1"]["clusters"] <= 31
    assert detail["val_accuracy_after_finetune"] >= detail["val_accuracy_before_finetune"]
    loaded = ds.load(result.data)
    for name, p in result.model.named_parameters():
        if name.endswith("weight"):  # the file holds exactly the stage's weights
            assert torch.equal(loaded.dense_state_dict()[name], p.detach())
            assert len(np.unique(p.detach().numpy())) > p.numel() // 2  # distinct values, not a codebook


def test_hash_stage_buckets_and_seeds(tiny):
    model, data = tiny
    recipe = Recipe.from_dict({"name": "t", "stages": [{"kind": "hash", "train": {"epochs": 1},
                                                       "layers": {"_linear": {"buckets": 0.125},
                                                                  "_last": {"buckets": 100, "sign": False}}}]})
    result = ds.compress(model, data, recipe, progress=False)
    layers = result.stages[1].detail["layers"]
    assert layers["fc1"]["buckets"] == 29400 and layers["fc3"]["buckets"] == 100
    assert len({v["seed"] for v in layers.values()}) == 3
    w = result.model.fc3.weight.detach().numpy()
    assert len(np.unique(w)) <= 100  # unsigned: the weights are the bucket values
    assert len(np.unique(np.abs(result.model.fc1.weight.detach().numpy()))) <= 29400
    assert result.ratio > 6


def test_dct_stage_rows_of_inputs_and_retraining_before_sharing(tiny):
    model, data = tiny
    recipe = Recipe.from_dict({"name": "t", "stages": [{
        "kind": "dct", "retrain": {"epochs": 1, "lr": 1e-3}, "finetune": {"epochs": 1, "lr": 1e-3},
        "layers": {"_linear": {"keep": 0.1, "bits": 5}, "_first": {"block": [1, 28]}}}]})
    result = ds.compress(model, data, recipe, progress=False)
    detail = result.stages[1].detail
    fc1 = detail["layers"]["fc1"]
    assert fc1["block"] == [1, 28] and fc1["kept"] == round(0.1 * 300 * 784)  # 784 = 28 rows of 28: no padding
    assert detail["layers"]["fc2"]["block"] == [8, 8]
    # the retrained (unshared) coefficients score at least as well as the shared ones before fine-tuning
    assert detail["val_accuracy_after_retrain"] >= detail["val_accuracy_before_finetune"] - 0.02
    loaded = ds.load(result.data)
    assert torch.equal(loaded.dense_state_dict()["fc1.weight"], result.model.fc1.weight.detach())
