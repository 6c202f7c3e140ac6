"""Stage ``quantize`` and the built-in recipes int8 / int4 / binary / ternary, on a LeNet-5 trained
briefly on real Fashion-MNIST images: the file loads in every runtime mode, exports to ONNX
(onnxruntime agrees) and to C, stores the real bit widths, keeps pruned zeros, and refuses
settings out of range with the setting named."""

from __future__ import annotations

import dataclasses
import math
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.errors import ConfigError
from deepshrink.quant.encoding import QuantTensor
from deepshrink.quant.stage import QuantizeStage
from deepshrink.recipes import Layer, Recipe
from deepshrink.recipes.stages import CodeStage, PruneStage, ShareStage
from deepshrink.storage import decode_typed
from deepshrink.fileformat import Limits, read_model_file

RECIPES = ("int8", "int4", "binary", "ternary")


@pytest.fixture(scope="module")
def tiny(fashion_small):
    return fashion_small.subset(800, 300, 300, seed=0)


LAYERS = ("conv1", "conv2", "fc1", "fc2")


class SmallCNN(nn.Module):
    """A LeNet-5 of a few thousand weights: the stages' paths at a fraction of the cost."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 5), nn.Conv2d(4, 8, 5)
        self.fc1, self.fc2 = nn.Linear(128, 32), nn.Linear(32, 10)
        self.relu, self.pool, self.flatten = nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()

    def forward(self, x):
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


@pytest.fixture(scope="module")
def lenet5(tiny):
    torch.manual_seed(0)
    model = SmallCNN()
    ds.fit(model, tiny.tensors("train"), tiny.tensors("val"), ds.TrainConfig(epochs=4, lr=3e-3, seed=0), progress=False)
    return model


def quick(recipe: Recipe, epochs: int = 1, **changes) -> Recipe:
    """``recipe`` with its quantise stage trained at most ``epochs`` epochs (and ``changes``)."""
    stages = []
    for s in recipe.stages:
        if isinstance(s, QuantizeStage):
            train = dataclasses.replace(s.train, epochs=min(s.train.epochs, epochs))
            s = dataclasses.replace(s, train=train, **changes)
        stages.append(s)
    return dataclasses.replace(recipe, stages=tuple(stages))


@pytest.fixture(scope="module")
def results(lenet5, tiny, tmp_path_factory):
    out = {}
    for name in RECIPES:
        res = ds.compress(lenet5, tiny, quick(ds.load_recipe(name)), progress=False)
        path = tmp_path_factory.mktemp("q") / f"{name}.dsz"
        path.write_bytes(res.data)
        out[name] = (res, path)
    return out


def _typed(path) -> dict:
    mf = read_model_file(path, Limits())
    return {n: decode_typed(n, d, mf.container.sections, Limits()) for n, d in mf.container.header["tensors"].items()}


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_file_loads_in_every_mode_and_exports(results, tiny, tmp_path, name):
    res, path = results[name]
    x, y = tiny.tensors("test")
    dense = ds.load(path)
    with torch.no_grad():
        want = dense(x)
        np.testing.assert_allclose(ds.load(path, mode="compressed")(x).numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
        res.model.eval()
        np.testing.assert_allclose(res.model(x).numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    assert (want.argmax(1) == y).float().mean() > 0.3  # still a trained network (chance: 0.1)
    typed = _typed(path)
    for layer in LAYERS:
        assert isinstance(typed[f"{layer}.weight"], QuantTensor)
        assert not isinstance(typed[f"{layer}.bias"], QuantTensor)
    levels = {"int8": "int", "int4": "int", "binary": "binary", "ternary": "ternary"}[name]
    assert typed["conv2.weight"].levels == levels and typed["conv1.weight"].bits == typed["fc2.weight"].bits == 8
    # compact ONNX: DequantizeLinear of the stored levels, onnxruntime agrees with the file's network
    out = ds.export(path, tmp_path / "m.onnx", compact=True)
    assert out["max_abs_diff"] < 1e-4
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)
    assert out["bytes"] < 1.2 * sum(p.numel() for p in res.model.parameters()) + 6000  # a byte per weight


def test_engine_and_c_export(results, tiny, tmp_path):
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    from deepshrink.engine.export import export_c

    _, path = results["ternary"]
    x, _ = tiny.tensors("test")
    with torch.no_grad():
        np.testing.assert_allclose(ds.load(path, mode="engine")(x[:50]).numpy(), ds.load(path)(x[:50]).numpy(),
                                   rtol=1e-4, atol=1e-4)
    out = export_c(path, tmp_path / "engine", inputs=tiny.x_test[:32])
    assert out["checked"] and out["argmax_agreement"] == 1.0


def test_int8_ptq_keeps_the_accuracy_at_four_times(results, lenet5, tiny):
    res, path = results["int8"]
    assert abs(res.stages[-1].test_accuracy - res.stages[0].test_accuracy) <= 0.01
    assert res.stages[-1].ratio > 3.3  # 4x of a few thousand weights, less the header, biases and scales
    quantized = res.stages[1].detail["layers"]
    assert all(v["relative_squared_error"] < 1e-3 for v in quantized.values())


def test_int4_layers_cost_half_a_byte_per_weight_with_the_fixed_coder(lenet5, tiny):
    recipe = quick(ds.load_recipe("int4"), epochs=0)
    recipe = dataclasses.replace(recipe, stages=(recipe.stages[0], CodeStage(coder="fixed")))
    res = ds.compress(lenet5, tiny, recipe, progress=False)
    sizes = {t.name: t for t in res.tensors}
    for layer in ("conv2", "fc1"):  # 4 bits; conv2 has 800 weights (rows of 100), fc1 4096
        t = sizes[f"{layer}.weight"]
        assert t.sections[f"{layer}.weight:q"] == math.ceil(t.numel / 2)
        assert t.sections[f"{layer}.weight:scale"] == 2 * t.shape[0]
    assert sizes["conv1.weight"].sections["conv1.weight:q"] == sizes["conv1.weight"].numel


def test_ttq_stores_three_values_per_layer_in_a_codebook(lenet5, tiny):
    res = ds.compress(lenet5, tiny, quick(ds.load_recipe("ternary"), ttq=True), progress=False)
    w = res.model.fc1.weight.detach()
    assert len(torch.unique(w)) == 3 and (w == 0).any()
    stored = {t.name: t for t in res.tensors}
    assert stored["fc1.weight"].enc == "codebook" and stored["fc1.weight"].codebook_size == 2
    assert stored["conv1.weight"].enc == "quant"  # int8, not ternary
    detail = res.stages[1].detail["layers"]["fc1"]
    assert detail["ttq"] and detail["positive_scale"] > 0 and detail["negative_scale"] > 0


def test_pruned_zeros_stay_zero_and_binary_refuses_them(lenet5, tiny):
    prune = PruneStage.parse({"kind": "prune", "steps": 1, "retrain": {"epochs": 0},
                              "layers": {"_default": {"sparsity": 0.6}}}, "p")
    pruned = ds.compress(lenet5, tiny, Recipe("p", (prune, CodeStage())), progress=False).model
    for levels, symmetric in (("int", False), ("ternary", True)):
        q = QuantizeStage.parse({"kind": "quantize", "train": {"epochs": 1},
                                 "layers": {"_default": {"levels": levels, "symmetric": symmetric}}}, "q")
        res = ds.compress(pruned, tiny, Recipe("pq", (q, CodeStage())), progress=False)
        for name in LAYERS:
            before, after = getattr(pruned, name).weight.detach(), getattr(res.model, name).weight.detach()
            assert (before == 0).float().mean() > 0.55 and (after[before == 0] == 0).all()
    binary = QuantizeStage.parse({"kind": "quantize", "layers": {"fc1": {"levels": "binary"}}}, "q")
    with pytest.raises(ConfigError, match="fc1.*pruned.*binary"):
        ds.compress(lenet5, tiny, Recipe("pb", (prune, binary, CodeStage())), progress=False)


def _lenet300_layers():
    model = ds.build_model("lenet-300-100")
    return {n: Layer("linear", m) for n, m in model.named_modules() if isinstance(m, nn.Linear)}


@pytest.mark.parametrize("table, needle", [
    ({"layers": {"_default": {"bits": 0}}}, "bits"),
    ({"layers": {"_default": {"bits": 9}}}, "bits"),
    ({"layers": {"_default": {"levels": "binary", "bits": 4}}}, "bits must be 1 for binary"),
    ({"layers": {"_default": {"levels": "int", "bits": 1}}}, "bits must be 2..8 for int"),
    ({"layers": {"_default": {"levels": "quaternary"}}}, "levels"),
    ({"layers": {"_default": {"granularity": "row"}}}, "granularity"),
    ({"layers": {"_default": {"granularity": "group"}}}, "group_size"),
    ({"layers": {"_default": {"granularity": "group", "group_size": 0}}}, "group_size"),
    ({"layers": {"_default": {"granularity": "group", "group_size": 48}}}, "group_size 48 does not divide.*784"),
    ({"layers": {"_default": {"levels": "ternary", "symmetric": False}}}, "symmetric"),
    ({"percentile": 50}, "percentile.*\\(50, 100\\]"),
    ({"percentile": 100.5}, "percentile"),
    ({"calibration": "kl"}, "calibration"),
    ({"ttq": "yes"}, "ttq"),
    ({"layers": {"_default": {"skip": True}}}, "no layer matches"),
    ({"train": {"epochs": -1}}, "epochs"),
])
def test_settings_out_of_range_are_named(table, needle):
    raw = {"kind": "quantize", "layers": {"_default": {"bits": 8}}, **table}
    with pytest.raises(ConfigError, match=needle):
        QuantizeStage.parse(raw, "quantize").check(_lenet300_layers(), has_val=True)


def test_a_later_stage_cannot_change_a_quantised_layer():
    q = QuantizeStage.parse({"kind": "quantize", "layers": {"fc1": {"bits": 4}, "fc2": {"levels": "ternary"}}}, "q")
    after = q.check(_lenet300_layers(), has_val=True)
    assert [after[n].fixed_by for n in ("fc1", "fc2", "fc3")] == ["quantize", "quantize", None]
    share = ShareStage.parse({"kind": "share", "layers": {"fc1": {"bits": 4}}}, "s")
    with pytest.raises(ConfigError, match="'fc1'.*'quantize'.*'share'"):
        share.check(after, has_val=True)
    ShareStage.parse({"kind": "share", "layers": {"fc3": {"bits": 4}}}, "s").check(after, has_val=True)


def test_bits_and_levels_reset_each_other_across_rule_levels():
    q = QuantizeStage.parse({"kind": "quantize", "layers": {"_default": {"levels": "binary"}, "_first": {"bits": 8},
                                                            "_last": {"levels": "ternary"}}}, "q")
    specs = q.specs({"fc1": "linear", "fc2": "linear", "fc3": "linear"})
    assert [(s.levels, s.bits) for s in specs.values()] == [("int", 8), ("binary", 1), ("ternary", 2)]


def test_qat_trains_the_shadow_weights(lenet5, tiny):
    """Quantisation-aware training moves the weights (the stored levels differ from rounding the
    dense model) and the model it leaves is the stored one."""
    recipe = quick(ds.load_recipe("int4"))
    ptq = ds.compress(lenet5, tiny, quick(ds.load_recipe("int4"), epochs=0), progress=False)
    qat = ds.compress(lenet5, tiny, recipe, progress=False)
    assert not torch.equal(ptq.model.conv2.weight, qat.model.conv2.weight)
    assert qat.stages[1].detail["val_accuracy_after_training"] is not None
    assert not any("parametrizations" in n for n, _ in qat.model.named_parameters())


def test_float16_halves_the_biases_and_leaves_the_levels(lenet5, tiny):
    recipe = quick(ds.load_recipe("int8"), float16=True)
    res = ds.compress(lenet5, tiny, recipe, progress=False)
    stored = {t.name: t for t in res.tensors}
    assert all(stored[f"{n}.bias"].dtype == "float16" and stored[f"{n}.bias"].total_bytes == 2 * stored[f"{n}.bias"].numel
               for n in LAYERS)
    assert all(stored[f"{n}.weight"].enc == "quant" for n in LAYERS)
