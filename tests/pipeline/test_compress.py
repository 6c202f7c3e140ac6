"""End to end on a small real subset of Fashion-MNIST."""

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepshrink as ds
from deepshrink.errors import ModelError
from deepshrink.recipes import Recipe


@pytest.fixture(scope="module")
def trained(fashion_small):
    torch.manual_seed(0)
    model = ds.build_model("lenet-300-100")
    ds.fit(model, fashion_small.tensors("train"), fashion_small.tensors("val"),
           ds.TrainConfig(epochs=4, seed=0), progress=False)
    return model


@pytest.fixture(scope="module")
def quick_recipe(tmp_path_factory):
    p = tmp_path_factory.mktemp("r") / "quick.toml"
    p.write_text("""
name = "quick"
[[stages]]
kind = "prune"
steps = 2
[stages.retrain]
epochs = 1
[stages.layers]
_linear = { sparsity = 0.9 }
_last = { sparsity = 0.7 }
[[stages]]
kind = "share"
[stages.finetune]
epochs = 1
[stages.layers]
_default = { bits = 5 }
[[stages]]
kind = "code"
coder = "huffman"
""")
    return ds.load_recipe(p)


def test_compress_end_to_end(trained, fashion_small, quick_recipe):
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    result = ds.compress(trained, fashion_small, quick_recipe, progress=False)
    # the input model is untouched
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert [s.stage for s in result.stages] == ["baseline", "prune", "share", "code"]
    sizes = [s.file_bytes for s in result.stages]
    assert sizes[0] > sizes[1] > sizes[2] > sizes[3]  # each stage shrinks the file
    assert result.file_bytes == len(result.data) == sizes[-1]
    assert result.ratio > 30
    # the file's accuracy equals the in-memory compressed model exactly
    assert result.file_accuracy == result.final.test_accuracy == ds.evaluate(result.model, fashion_small.tensors("test"))
    loaded = ds.load(result.data)
    x, _ = fashion_small.tensors("test")
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))
    # pruning and sharing really happened, layer by layer
    for row in result.layers:
        assert row.kept <= (0.31 if row.name == "fc3" else 0.11)
        assert 16 <= row.codebook <= 31 and row.bits == 5  # sign-split linear init leaves few clusters empty
    # a real network: far above chance on held-out data after compression
    assert result.file_accuracy > 0.70
    d = result.to_dict()
    assert d["streams"] and all(s["coded_bytes"] > 0 for s in d["streams"] if s["symbols"])


def test_a_run_decodes_its_bytes_once_unless_asked_for_exact_stages(trained, fashion_small, quick_recipe, monkeypatch):
    import deepshrink.fileformat.model_file as model_file

    decoded = []
    decode = model_file.decode_tensor
    monkeypatch.setattr(model_file, "decode_tensor", lambda name, *a: decoded.append(name) or decode(name, *a))
    estimate = ds.compress(trained, fashion_small, quick_recipe, progress=False)
    assert sorted(decoded) == sorted(t.name for t in estimate.tensors)  # the final file, once
    decoded.clear()
    exact = ds.compress(trained, fashion_small, quick_recipe, progress=False, measure="exact")
    assert len(decoded) == 3 * len(exact.tensors)  # every stage's bytes
    assert exact.to_dict()["measure"] == "exact" and exact.file_accuracy == exact.final.test_accuracy
    with pytest.raises(ds.DeepshrinkError, match="measure"):
        ds.compress(trained, fashion_small, quick_recipe, progress=False, measure="fast")


def test_ans_beats_or_matches_huffman_on_the_same_model(trained, fashion_small, quick_recipe):
    from deepshrink.coding import Coder
    from deepshrink.pipeline.compress import coding_rule
    from deepshrink.prune import layer_kind, prunable_layers

    result = ds.compress(trained, fashion_small, quick_recipe, progress=False)
    layers = prunable_layers(result.model)
    kinds = {n: layer_kind(m) for n, m in layers.items()}
    sizes = {}
    for coder in Coder:
        blob, rep = ds.pack_model(result.model, fashion_small.input_spec,
                                  coding=coding_rule(quick_recipe.code_stage, coder, list(layers), kinds))
        sizes[coder] = rep.payload_bytes
        assert ds.evaluate(ds.load(blob), fashion_small.tensors("test")) == result.file_accuracy
    assert sizes[Coder.ANS] <= sizes[Coder.HUFFMAN] < sizes[Coder.FIXED]


def test_user_model_through_the_api(fashion_small):
    from torch import nn

    class Mine(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x):
            return torch.cumsum(self.fc(x.flatten(1)), 1)  # cumsum is outside the graph format

    # cumsum is not storable: a clear error before any training
    with pytest.raises(ds.DeepshrinkError):
        ds.compress(Mine(), fashion_small, ds.load_recipe("deep-compression"), progress=False)

    class Good(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 6, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(6 * 14 * 14, 10)

        def forward(self, x):
            return self.fc(self.pool(torch.relu(self.conv(x))).reshape(x.size(0), -1))

    recipe = Recipe.from_dict({"name": "t", "stages": [
        {"kind": "prune", "steps": 1, "retrain": {"epochs": 1}, "layers": {"_default": {"sparsity": 0.5}}},
        {"kind": "share", "finetune": {"epochs": 1}, "layers": {"_default": {"bits": 4}}},
        {"kind": "code", "coder": "ans"},
    ]})
    result = ds.compress(Good(), fashion_small, recipe, progress=False)
    loaded = ds.load(result.data)
    assert np.array_equal(loaded.predict(fashion_small.x_test[:100]),
                          result.model(fashion_small.tensors("test")[0][:100]).argmax(1).numpy())


def test_svd_recipe_factorises_stores_and_exports(trained, fashion_small, tmp_path):
    import onnx

    builtin = ds.load_recipe("svd")
    assert [s.kind for s in builtin.stages] == ["lowrank"]
    recipe = Recipe.from_dict({"name": "svd-quick", "stages": [  # the built-in rules, one epoch
        {"kind": "lowrank", "finetune": {"epochs": 1}, "layers": builtin.stages[0].layers.to_dict()},
        {"kind": "code"},
    ]})
    result = ds.compress(trained, fashion_small, recipe, progress=False)
    layers = result.stages[1].detail["layers"]
    assert {n: d["shapes"][0][0] for n, d in layers.items()} == {"fc1": 54, "fc2": 18}  # 54 * (784 + 300) <= 0.25 * 784 * 300
    assert [r.name for r in result.layers] == ["fc1.first", "fc1.second", "fc2.first", "fc2.second", "fc3"]
    assert 3.0 < result.ratio < 4.5  # about a quarter of the parameters, stored as float32
    assert result.file_accuracy > 0.7
    path = tmp_path / "svd.dsz"
    path.write_bytes(result.data)
    ds.export(path, tmp_path / "svd.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "svd.onnx")).graph.node]
    assert ops.count("Gemm") == 5  # the exported graph has the smaller layers, not a dense matrix


def test_lowrank_max_drop_picks_the_smallest_rank_within_the_tolerance(trained, fashion_small):
    from deepshrink.lowrank import factorize
    from deepshrink.pipeline.compress import MAX_DROP_GRID

    recipe = Recipe.from_dict({"name": "drop", "stages": [
        {"kind": "lowrank", "finetune": {"epochs": 0}, "layers": {"fc1": {"max_drop": 1.0}}}]})
    result = ds.compress(trained, fashion_small, recipe, progress=False)
    chosen = result.stages[1].detail["layers"]["fc1"]["rank"]
    assert chosen in MAX_DROP_GRID
    val = fashion_small.tensors("val")
    base = ds.evaluate(trained, val)

    def drop(fraction):
        model = __import__("copy").deepcopy(trained)
        model.fc1 = factorize(model.fc1, "svd", rank=fraction)
        return 100 * (base - ds.evaluate(model, val))

    assert drop(chosen) <= 1.0
    i = MAX_DROP_GRID.index(chosen)
    assert i == 0 or drop(MAX_DROP_GRID[i - 1]) > 1.0  # one step smaller breaks the tolerance
    assert result.stages[1].val_accuracy >= base - 0.01


def test_lowrank_rules_name_the_methods_that_fit_a_layer(fashion_small):
    from deepshrink.errors import ConfigError

    model = ds.build_model("lenet-5")
    for layers, match in (({"_conv": {"method": "svd", "rank": 0.5}}, "convolution"),
                          ({"_linear": {"method": "tucker", "rank": 0.5}}, "linear layer"),
                          ({"nothing": {"rank": 0.5}}, "no layer matches")):
        recipe = Recipe.from_dict({"name": "bad", "stages": [{"kind": "lowrank", "layers": layers}]})
        with pytest.raises(ConfigError, match=match):
            ds.compress(model, fashion_small, recipe, progress=False)


def test_a_model_the_graph_cannot_reproduce_is_refused_before_training(fashion_small, quick_recipe, monkeypatch):
    """Dropout that stays on in eval mode traces as identity: compress says so before any training."""

    class AlwaysDropout(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x):
            return F.dropout(self.fc(x.flatten(1)), p=0.5, training=True)

    def no_training(*args, **kwargs):
        raise AssertionError("training started before the model was checked")

    monkeypatch.setattr(sys.modules["deepshrink.train.loop"], "fit", no_training)
    with pytest.raises(ModelError, match="does not reproduce"):
        ds.compress(AlwaysDropout(), fashion_small, quick_recipe)
