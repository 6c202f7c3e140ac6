"""The ``structured`` stage in a compression run: the file holds the smaller dense network, which
loads, evaluates and exports to ONNX and C; bad rules are refused naming the layer."""

from __future__ import annotations

import pytest
import torch

import deepshrink as ds
from deepshrink.errors import ConfigError
from deepshrink.recipes import Recipe, load_recipe
from deepshrink.recipes.stages import CodeStage
from deepshrink.structured.stage import StructuredStage


def _recipe(importance="l1", layers=None, steps=2):
    stage = StructuredStage.parse({"kind": "structured", "importance": importance, "steps": steps, "calibration": 256,
                                   "retrain": {"epochs": 1, "lr": 1e-3, "distill": 0.5},
                                   "layers": layers or {"_default": {"fraction": 0.5}, "_last": {"skip": True}}},
                                  "structured")
    return Recipe("quick-structured", (stage, CodeStage()))


@pytest.fixture(scope="module")
def tiny(fashion_small):
    """600 training, 300 validation and 300 test samples: enough to see the network work."""
    return fashion_small.subset(600, 300, 300, seed=0)


@pytest.fixture(scope="module")
def trained(tiny):
    out = {}
    for name in ("lenet-300-100", "lenet-5"):
        torch.manual_seed(0)
        model = ds.build_model(name)
        ds.fit(model, tiny.tensors("train"), tiny.tensors("val"), ds.TrainConfig(epochs=2, seed=0), progress=False)
        out[name] = model
    return out


@pytest.mark.parametrize("name,importance", [("lenet-300-100", "taylor"), ("lenet-5", "l1")])
def test_compressed_file_is_the_smaller_dense_network(trained, tiny, tmp_path, name, importance):
    model = trained[name]
    res = ds.compress(model, tiny, _recipe(importance), progress=False)
    detail = res.stages[1].detail
    expect = {"lenet-300-100": {"fc1": (300, 150), "fc2": (100, 50)},
              "lenet-5": {"conv1": (20, 10), "conv2": (50, 25), "fc1": (500, 250)}}[name]
    assert {k: (v["before"], v["after"]) for k, v in detail["channels"].items()} == expect
    assert len(detail["val_accuracy_per_step"]) == 2
    assert res.ratio > 1.9 and res.file_accuracy > res.baseline.test_accuracy - 0.08
    path = tmp_path / "m.dsz"
    path.write_bytes(res.data)
    net = ds.load(path)
    first = "fc1" if name == "lenet-300-100" else "conv1"
    assert tuple(net.net.named_graph_tensors()[f"{first}.weight"].shape)[0] == expect[first][1]
    acc = ds.evaluate(net, tiny.tensors("test"))
    assert abs(acc - res.file_accuracy) < 1e-6
    info = ds.export(path, tmp_path / "m.onnx")
    assert info["bytes"] < 0.6 * res.dense_bytes
    c = ds.export(path, tmp_path / "engine", "c")
    assert (tmp_path / "engine" / "model.c").exists()
    if c["checked"]:
        assert c["argmax_agreement"] == 1.0


def test_rules_naming_a_layer_that_must_keep_its_channels_are_refused(trained, tiny):
    with pytest.raises(ConfigError, match="'fc3'.*cannot be removed.*output"):
        ds.compress(trained["lenet-300-100"], tiny, _recipe(layers={"fc3": {"fraction": 0.5}}),
                    progress=False)


def test_stage_settings_and_check():
    for bad, needle in (({"steps": 0}, "steps"), ({"multiple": 0}, "multiple"), ({"importance": "l3"}, "importance"),
                        ({"layers": {"fc1": {"fraction": 1.0}}}, r"fc1\.fraction.*\[0, 1\)"),
                        ({"layers": {"fc1": {"fraction": 0.5, "skip": True}}}, "choose one")):
        with pytest.raises(ConfigError, match=needle):
            StructuredStage.parse({"kind": "structured", **bad}, "structured")
    stage = StructuredStage.parse({"kind": "structured", "layers": {"_conv": {"fraction": 0.5}}}, "structured")
    from deepshrink.recipes import Layer
    model = ds.build_model("lenet-300-100")
    layers = {n: Layer("linear", getattr(model, n)) for n in ("fc1", "fc2", "fc3")}
    with pytest.raises(ConfigError, match="no layer matches"):
        stage.check(layers, has_val=True)
    recipe = load_recipe("structured")
    assert recipe.stages[0].kind == "structured" and recipe.stages[0].order == 10
    after = recipe.stages[0].check(layers, has_val=True)
    assert {n: (a.kind, a.module, a.fixed_by) for n, a in after.items()} == {n: (a.kind, a.module, None) for n, a in layers.items()}
