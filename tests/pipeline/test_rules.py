"""Recipe rules are checked against the model before any training; val_size=0 through compress."""

from __future__ import annotations

import importlib
import math

import pytest

import deepshrink as ds
from deepshrink.errors import ConfigError
from deepshrink.lowrank import METHODS, factorize
from deepshrink.pipeline import check_recipe
from deepshrink.recipes import Recipe

train_loop = importlib.import_module("deepshrink.train.loop")  # where every stage's training runs


def _recipe(*stages) -> Recipe:
    return Recipe.from_dict({"name": "r", "stages": list(stages)})


def _prune(layers, **kw):
    return {"kind": "prune", "steps": 1, "retrain": {"epochs": 1}, "layers": layers, **kw}


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if compress() trains anything."""
    calls = []
    monkeypatch.setattr(train_loop, "fit", lambda *a, **k: calls.append(a) or pytest.fail("fit() was called"))
    return calls


@pytest.mark.parametrize("stage, needle", [
    (_prune({"fc9": {"sparsity": 0.92}, "_default": {"sparsity": 0.5}}), "'fc9'"),  # the typo
    (_prune({"re:fc[4-9]": {"sparsity": 0.9}, "fc1": {"sparsity": 0.9}}), "'re:fc[4-9]'"),
    (_prune({"re:fc.*": {"sparsity": 0.9}, "re:fc1": {"sparsity": 0.5}}), "'re:fc1'"),  # shadowed by the first
    (_prune({"relu1": {"sparsity": 0.9}, "fc1": {"sparsity": 0.9}}), "'relu1' is a ReLU"),
    ({"kind": "share", "layers": {"fc2": {"bits": 4}, "fc4": {"bits": 4}}}, "'fc4'"),
    ({"kind": "code", "layers": {"fc_3": {"gap_bits": 4}}}, "'fc_3'"),
    ({"kind": "lowrank", "layers": {"fc1": {"rank": 8}, "fc0": {"rank": 8}}}, "'fc0'"),
])
def test_a_rule_that_matches_no_layer_is_refused_before_training(fashion_small, no_training, stage, needle):
    model = ds.build_model("lenet-300-100")
    with pytest.raises(ConfigError) as e:
        ds.compress(model, fashion_small, _recipe(stage), progress=False)
    msg = str(e.value)
    assert needle in msg and "no layer matches" in msg
    assert "fc1 (linear), fc2 (linear), fc3 (linear)" in msg  # the layers it could have meant
    assert not no_training


def test_special_keys_may_match_nothing():
    model = ds.build_model("lenet-300-100")  # no convolutions, yet _conv is fine
    check_recipe(model, _recipe(_prune({"_conv": {"sparsity": 0.5}, "_linear": {"sparsity": 0.9}}),
                                {"kind": "share", "layers": {"_conv": {"bits": 8}, "_last": {"bits": 5}}}))


def test_rules_after_lowrank_name_the_factors():
    model = ds.build_model("lenet-5")
    lowrank = {"kind": "lowrank", "layers": {"fc1": {"rank": 8}, "conv2": {"method": "tucker", "rank": 0.5}}}
    good = {"kind": "share", "layers": {"fc1.second": {"bits": 4}, "conv2.core": {"bits": 6}, "fc2": {"bits": 5}}}
    check_recipe(model, _recipe(lowrank, good))
    for rule in ("fc1", "fc1.third", "conv2.first"):
        with pytest.raises(ConfigError, match=r"stage 2 \(share\).*no layer matches") as e:
            check_recipe(model, _recipe(lowrank, {"kind": "share", "layers": {rule: {"bits": 4}}}))
        assert "fc1.first (linear), fc1.second (linear)" in str(e.value)


@pytest.mark.parametrize("method", list(METHODS))
def test_factor_names_are_the_names_factorize_gives(method):
    from torch import nn

    from deepshrink.lowrank import LINEAR_METHODS, NeuronScores
    from deepshrink.prune import prunable_layers

    m = nn.Linear(12, 10) if method in LINEAR_METHODS else nn.Conv2d(4, 6, 3)
    scores = NeuronScores(m.weight.abs().sum(0).detach(), m.weight.abs().sum(1).detach()) if method == "slr" else None
    assert tuple(prunable_layers(factorize(m, method, rank=2, scores=scores))) == METHODS[method].factors


def test_no_validation_split_keeps_the_last_epoch_and_reports_none(fashion_small):
    from deepshrink.data import Dataset

    d = fashion_small
    noval = Dataset(d.name, d.x_train[:1000], d.y_train[:1000], d.x_val[:0], d.y_val[:0], d.x_test[:500],
                    d.y_test[:500], d.num_classes, d.input_spec)
    model = ds.build_model("lenet-300-100")
    result = ds.compress(model, noval, _recipe(_prune({"_default": {"sparsity": 0.5}}), {"kind": "code"}),
                         progress=False)
    assert all(s.val_accuracy is None for s in result.stages)
    assert result.stages[1].detail["val_accuracy_per_step"] == [None]
    d = result.to_dict()
    assert d["split_sizes"] == {"train": 1000, "val": 0, "test": 500}
    assert not math.isnan(d["final_test_accuracy"])
    with pytest.raises(ConfigError, match="max_drop.*validation"):
        ds.compress(model, noval, _recipe({"kind": "lowrank", "layers": {"fc1": {"max_drop": 1.0}}}), progress=False)


@pytest.mark.parametrize("stage", [_prune({"_conv": {"sparsity": 0.5}}),
                                   {"kind": "share", "layers": {"_conv": {"bits": 8}}},
                                   {"kind": "lowrank", "layers": {"_conv": {"rank": 0.5}}}])
def test_a_stage_whose_rules_select_no_layer_is_refused(stage):
    with pytest.raises(ConfigError, match=r"stage 1 .*no layer matches its rules"):
        check_recipe(ds.build_model("lenet-300-100"), _recipe(stage))


@pytest.mark.parametrize("ramp, first", [("linear", 0.5), ("cubic", 0.875)])
def test_the_prune_ramp_sets_each_steps_sparsity(fashion_small, ramp, first):
    """Two steps to 80 %: the linear ramp prunes 40 % first, the cubic one 70 % (7/8 of the target)."""
    d = fashion_small
    small = type(d)(d.name, d.x_train[:512], d.y_train[:512], d.x_val[:256], d.y_val[:256], d.x_test[:256],
                    d.y_test[:256], d.num_classes, d.input_spec)
    stage = _prune({"_default": {"sparsity": 0.8}}, steps=2, ramp=ramp)
    result = ds.compress(ds.build_model("lenet-300-100"), small, _recipe(stage, {"kind": "code"}), progress=False)
    reached = result.stages[1].detail["sparsity_per_step"]
    assert reached == pytest.approx([0.8 * first, 0.8], abs=1e-3)
