"""The three pretrained zoo networks through the whole API, each on its own data and objective:
create → compress (tiny recipes, a handful of samples) → file bytes → load → the file reproduces
the compressed in-memory model on real samples → ONNX export, onnxruntime agreeing.

Kept small for CI (the real runs are in bench/): a few samples, MobileNetV2 on 64×64 crops (it
is fully convolutional with adaptive pooling), MiniLM on 8-token sentences.
"""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.data import load_dataset
from deepshrink.data.images import ImageCrops
from deepshrink.data.text import DebianSentences
from deepshrink.graph import fold_batchnorm_modules, trace
from deepshrink.models import ZOO, create, num_classes
from deepshrink.pipeline.pack import check_reproduces
from deepshrink.recipes import Recipe

TINY = {"train": 16, "val": 8, "test": 8}


def _tiny_recipe(lowrank: dict | None = None) -> Recipe:
    return Recipe.from_dict({"name": "tiny", "stages": [
        {"kind": "prune", "steps": 1, "retrain": {"epochs": 1, "batch_size": 8},
         "layers": {"_default": {"sparsity": 0.5}}},
        *([lowrank] if lowrank else []),
        {"kind": "share", "finetune": {"epochs": 0}, "layers": {"_default": {"bits": 5}}},
        {"kind": "code"},
    ]})


def _through_the_api(name: str, data, recipe: Recipe, tmp_path) -> tuple[ds.CompressionResult, ds.CompressedModel]:
    """compress → load → reproduce on real samples → ONNX; returns the result and the loaded file."""
    torch.manual_seed(0)
    objective = ZOO[name].pretrained.objective
    result = ds.compress(create(name), data, recipe, progress=False, objective=objective)
    assert result.objective == objective and result.baseline.test_accuracy == pytest.approx(
        1.0 if objective != "classify" else result.baseline.test_accuracy)
    assert result.ratio > 4 and all(math.isfinite(v) for v in result.final.test_metrics.values())
    net = ds.load(result.data)
    test = data.split("test")
    check_reproduces(result.model, net, data.input_spec, test.inputs)  # the file is the compressed model
    with torch.no_grad():
        torch.testing.assert_close(net(*test.inputs), result.model.eval()(*test.inputs), rtol=1e-4, atol=1e-5)
    out = ds.export(result.data, tmp_path / f"{name}.onnx", inputs=test.inputs)
    assert out["max_abs_diff"] < 1e-4
    session = ort.InferenceSession(str(tmp_path / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {i.name: x.numpy() for i, x in zip(session.get_inputs(), test.inputs)})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, net(*test.inputs).numpy(), rtol=1e-4, atol=1e-4)
    return result, net


def test_ccexam_mnist_cnn(tmp_path):
    data = load_dataset("mnist-5k").subset(64, 32, 200, seed=0)
    result, net = _through_the_api("ccexam-mnist-cnn", data, _tiny_recipe(), tmp_path)
    assert result.metric == "accuracy" and result.file_accuracy > 0.9  # 50 % pruned, 5 bits, one epoch
    assert num_classes(net) == 10 and net.input_spec == data.input_spec


def test_mobilenet_v2_on_small_crops(tmp_path):
    data = ImageCrops(TINY, size=64)
    result, net = _through_the_api("mobilenet-v2", data, _tiny_recipe(), tmp_path)
    assert result.metric == "top1_agreement" and num_classes(net) == 1000
    folded = result.baseline.detail["folded_batchnorm"]
    assert len(folded) == 52 and folded["features.0.1"] == "features.0.0"  # every BN follows a conv
    assert "batch_norm" not in {n.op for n in net.graph.nodes}
    rows = {r.name: r for r in result.layers}
    assert rows["features.1.conv.0.0"].kept == pytest.approx(0.5, abs=0.02)  # a depthwise conv, pruned
    assert net.plan.shapes[net.graph.input_names[0]] == (3, 64, 64)


def test_minilm_low_rank_attention_pruned_shared_embeddings(tmp_path):
    data = DebianSentences({"train": 8, "val": 4, "test": 8}, max_length=8)
    lowrank = {"kind": "lowrank", "finetune": {"epochs": 0},
               "layers": {"re:layers\\.0\\.(query|key|value|attention_out)": {"method": "svd", "rank": 0.5}}}
    result, net = _through_the_api("minilm-l6", data, _tiny_recipe(lowrank), tmp_path)
    assert result.metric == "mean_cosine" and 0.3 < result.file_accuracy <= 1.0
    assert net.input_spec is None and num_classes(net) is None
    assert [(i.name, i.dtype, i.shape) for i in net.graph.inputs] == [("input_ids", "int64", (8,)),
                                                                     ("attention_mask", "int64", (8,))]
    detail = result.stages[2].detail["layers"]
    assert set(detail) == {f"layers.0.{p}" for p in ("query", "key", "value", "attention_out")}
    rows = {r.name: r for r in result.layers}
    assert "layers.0.query.first" in rows and "layers.0.query" not in rows and "layers.1.query" in rows
    for emb in ("embeddings.word", "embeddings.position"):  # pruned and shared like every layer
        assert rows[emb].kept == pytest.approx(0.5, abs=0.01) and rows[emb].codebook <= 31
    word = result.model.embeddings.word.weight.detach()
    assert len(torch.unique(word[word != 0])) <= 31


def test_batchnorm_folding_of_the_real_mobilenet_v2_is_exact_to_float_rounding():
    model = create("mobilenet-v2")
    x = ImageCrops({"train": 0, "val": 0, "test": 6}, size=96).split("test").inputs[0]
    with torch.no_grad():
        want = model.double()(x.double())  # the unfolded network in float64
        model.float()
        before = model(x)
    folded = fold_batchnorm_modules(model)
    assert len(folded) == 52 and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.features[0][0].bias is not None and isinstance(model.features[0][1], nn.Identity)
    assert "batch_norm" not in {n.op for n in trace(model).nodes}
    with torch.no_grad():
        after = model(x)
    # folding changes the float32 result no more than float32 rounding of the unfolded network does
    scale = want.abs().max().item()
    assert (after.double() - want).abs().max().item() < 4 * max((before.double() - want).abs().max().item(), 1e-6 * scale)
    assert (after.argmax(1) == before.argmax(1)).all()
    assert fold_batchnorm_modules(model) == {}  # nothing left to fold
