"""compress with an objective other than classification, on data without labels; layer kinds
from the op registry in every stage (grouped and depthwise convolutions, embeddings)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.data import InputSpec, Split
from deepshrink.errors import ConfigError, DataError, ModelError
from deepshrink.graph.ops import op_for_module
from deepshrink.pipeline import DataSource, check_recipe
from deepshrink.prune import layer_kind, prunable_layers
from deepshrink.recipes import Recipe


class Unlabeled:
    """A data source that is not a Dataset and has no labels: the DataSource protocol only."""

    def __init__(self, dataset):
        self.name = f"{dataset.name} (no labels)"
        self._d = dataset

    @property
    def input_spec(self) -> InputSpec:
        return self._d.input_spec

    def split(self, name: str) -> Split:
        return Split(self._d.split(name).inputs)

    def split_sizes(self) -> dict[str, int]:
        return self._d.split_sizes()


@pytest.fixture(scope="module")
def lenet5(fashion_small):
    torch.manual_seed(0)
    model = ds.build_model("lenet-5")
    ds.fit(model, fashion_small.split("train"), fashion_small.split("val"), ds.TrainConfig(epochs=1, seed=0),
           progress=False)
    return model


def _quick(*layers_per_stage):
    return Recipe.from_dict({"name": "quick", "stages": [
        {"kind": "prune", "steps": 1, "retrain": {"epochs": 1, "lr": 1e-3, "temperature": 2.0},
         "layers": {"_default": {"sparsity": 0.8}}},
        {"kind": "share", "finetune": {"epochs": 1}, "layers": {"_default": {"bits": 5}}},
        {"kind": "code"},
    ]})


def test_compress_matches_the_dense_logits_without_labels(lenet5, fashion_small):
    data = Unlabeled(fashion_small)
    assert isinstance(data, DataSource)
    with pytest.raises(DataError, match="needs labels"):  # the default objective needs them
        ds.compress(lenet5, data, _quick(), progress=False)
    result = ds.compress(lenet5, data, _quick(), progress=False, objective="match-logits")
    assert result.objective == "match-logits" and result.metric == "top1_agreement"
    base = result.baseline
    assert base.test_accuracy == 1.0 and base.test_metrics["mean_kl"] == pytest.approx(0.0, abs=1e-9)
    final = result.final
    assert result.file_accuracy == final.test_accuracy == final.test_metrics["top1_agreement"]
    assert 0.75 < result.file_accuracy < 1.0 and final.test_metrics["mean_kl"] > 0  # chance is 0.1
    assert 0.8 < final.test_metrics["top5_overlap"] <= 1.0
    assert result.ratio > 10
    d = result.to_dict()
    assert d["objective"] == "match-logits" and d["final_test_metrics"]["top1_agreement"] == result.file_accuracy
    # the score is the agreement of the stored file with the dense model on the test split
    x = fashion_small.split("test").inputs[0]
    with torch.no_grad():
        agree = float((ds.load(result.data)(x).argmax(1) == lenet5(x).argmax(1)).float().mean())
    assert agree == pytest.approx(result.file_accuracy)


def test_classify_is_the_default_and_reports_accuracy(lenet5, fashion_small):
    recipe = Recipe.from_dict({"name": "c", "stages": [{"kind": "code"}]})
    result = ds.compress(lenet5, fashion_small, recipe, progress=False)
    assert result.objective == "classify" and result.metric == "accuracy"
    assert result.file_accuracy == ds.evaluate(lenet5, fashion_small.split("test"))  # code changes no weight
    assert result.final.test_metrics == {"accuracy": result.file_accuracy}


class Mobile(nn.Module):
    """A MobileNet-style block: conv, depthwise conv, pointwise conv, classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.pw = nn.Conv2d(8, 16, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.dw(x))
        x = torch.relu(self.grouped(x))
        return self.fc(self.pool(torch.relu(self.pw(x))).flatten(1))


def _lowrank(layers):
    return Recipe.from_dict({"name": "lr", "stages": [{"kind": "lowrank", "finetune": {"epochs": 0},
                                                       "layers": layers}]})


def test_kinds_come_from_the_op_registry():
    model = Mobile()
    kinds = {n: layer_kind(m) for n, m in prunable_layers(model).items()}
    assert kinds == {"stem": "conv", "dw": "conv", "grouped": "conv", "pw": "conv", "fc": "linear"}
    assert all(layer_kind(m) == op_for_module(m).layer_kind for m in prunable_layers(model).values())
    assert layer_kind(model.pool) is None and layer_kind(nn.ReLU()) is None


@pytest.mark.parametrize("name, what", [("dw", "depthwise conv dw (groups=8)"), ("grouped", "grouped conv grouped (groups=2)")])
def test_lowrank_refuses_a_grouped_conv_named_by_a_rule(name, what):
    with pytest.raises(ConfigError, match=re.escape(f"{what} has no low-rank form")):
        check_recipe(Mobile(), _lowrank({name: {"method": "tucker", "rank": 0.5}}))


def test_lowrank_skips_grouped_convs_a_pattern_selects_and_reports_them(fashion_small):
    torch.manual_seed(0)
    model = Mobile()
    recipe = _lowrank({"_conv": {"method": "tucker", "rank": 0.5}, "stem": {"skip": True}, "_linear": {"rank": 4}})
    result = ds.compress(model, fashion_small, recipe, progress=False)
    detail = result.stages[1].detail
    assert set(detail["layers"]) == {"pw", "fc"}
    assert set(detail["skipped"]) == {"dw", "grouped"} and "depthwise conv dw (groups=8)" in detail["skipped"]["dw"]
    assert [r.name for r in result.layers] == ["stem", "dw", "grouped", "pw.reduce", "pw.core", "pw.restore",
                                               "fc.first", "fc.second"]
    # only grouped convs selected: nothing to factorise, and the error says why
    with pytest.raises(ConfigError, match="nothing to factorise.*skipped: depthwise conv dw"):
        check_recipe(model, _lowrank({"re:(dw|grouped)": {"method": "tucker", "rank": 0.5}}))


def test_prune_and_share_reach_depthwise_convs(fashion_small):
    torch.manual_seed(0)
    recipe = Recipe.from_dict({"name": "ps", "stages": [
        {"kind": "prune", "steps": 1, "retrain": {"epochs": 1}, "layers": {"_conv": {"sparsity": 0.5}}},
        {"kind": "share", "finetune": {"epochs": 1}, "layers": {"_default": {"bits": 3}}},
        {"kind": "code"}]})
    result = ds.compress(Mobile(), fashion_small, recipe, progress=False)
    rows = {r.name: r for r in result.layers}
    assert rows["dw"].kept == pytest.approx(0.5, abs=0.02) and rows["dw"].codebook <= 7
    w = result.model.dw.weight.detach()
    assert len(torch.unique(w[w != 0])) <= 7


EMBEDDING_OP = op_for_module(nn.Embedding(3, 2))


@pytest.mark.skipif(EMBEDDING_OP is None, reason="the Embedding op is not registered yet (ops engineer, branch i8-ops)")
def test_embeddings_are_pruned_and_shared_and_have_no_low_rank_form():
    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.fc = nn.Linear(16, 4)

        def forward(self, ids):
            return self.fc(self.emb(ids).mean(1))

    model = Bag()
    assert layer_kind(model.emb) == "embedding"
    check_recipe(model, Recipe.from_dict({"name": "e", "stages": [
        {"kind": "prune", "layers": {"_embedding": {"sparsity": 0.5}}},
        {"kind": "share", "layers": {"_default": {"bits": 4}}}]}))
    with pytest.raises(ConfigError, match="embedding emb .*has no low-rank form"):
        check_recipe(model, _lowrank({"emb": {"rank": 4}}))
    check_recipe(model, _lowrank({"_default": {"rank": 4}}))  # skipped: fc is factorised


def test_no_low_rank_form_messages_without_the_embedding_op():
    """The reasons come from the layer's kind and shape, whatever module class it is."""
    from deepshrink.lowrank import low_rank_kind, no_low_rank_form

    assert low_rank_kind(nn.Linear(4, 3)) == "linear" and low_rank_kind(nn.Conv2d(4, 3, 3)) == "conv"
    assert low_rank_kind(nn.Conv2d(4, 4, 3, groups=4)) is None
    assert "depthwise conv a (groups=4)" in no_low_rank_form("a", nn.Conv2d(4, 4, 3, groups=4))
    assert "not a layer" in no_low_rank_form("r", nn.ReLU())
    assert not math.isnan(1.0)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(4, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x, z):
        return self.out(torch.relu(self.a(x) + self.b(z)))


class TwoInputSource:
    """Two float inputs: no one input specification describes them (``input_spec`` None)."""

    name = "two-inputs"
    input_spec = None

    def split(self, name):
        g = torch.Generator().manual_seed(len(name))
        return Split((torch.randn(200, 6, generator=g), torch.randn(200, 4, generator=g)))

    def split_sizes(self):
        return {"train": 200, "val": 200, "test": 200}


def test_compress_a_model_of_several_inputs():
    torch.manual_seed(0)
    teacher = TwoInputs()
    result = ds.compress(teacher, TwoInputSource(), _quick(), progress=False, objective="match-logits")
    assert result.file_accuracy > 0.5  # chance is 1/3
    assert {r.name: round(r.kept, 1) for r in result.layers} == {"a": 0.2, "b": 0.2, "out": 0.2}
    net = ds.load(result.data)
    assert net.input_spec is None and net.graph.input_names == ("x", "z")
    assert [(i.dtype, i.shape) for i in net.graph.inputs] == [("float32", (6,)), ("float32", (4,))]
    x, z = TwoInputSource().split("test").inputs
    with torch.no_grad():
        torch.testing.assert_close(net(x, z), result.model(x, z), rtol=1e-5, atol=1e-5)
        agree = float((net(x, z).argmax(1) == teacher(x, z).argmax(1)).float().mean())
    assert agree == pytest.approx(result.file_accuracy)


def test_an_input_spec_for_a_model_of_several_inputs_is_refused_before_training():
    class Described(TwoInputSource):
        input_spec = InputSpec((6,), "float32", 1.0, (0.0,), (1.0,))

    with pytest.raises(ModelError, match=r"describes one float32 input of shape \(6,\); the model takes x "
                                         r"\(float32\), z \(float32\)"):
        ds.compress(TwoInputs(), Described(), _quick(), progress=False, objective="match-logits")
