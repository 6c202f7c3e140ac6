"""The built-in dct and hashed recipes end to end on a few hundred samples: the file loads in
every runtime mode and exports to ONNX (onnxruntime agrees) and C."""

import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.engine import native
from deepshrink.engine.export import export_c
from deepshrink.recipes import Recipe


def quick(name: str) -> Recipe:
    """The built-in recipe with one epoch of training."""
    raw = ds.load_recipe(name).to_dict()
    for s in raw["stages"]:
        for t in ("finetune", "train"):
            if t in s:
                s[t]["epochs"] = 1
    return Recipe.from_dict({**raw, "name": f"{name}-quick"})


class Small(nn.Module):
    """A LeNet-5 in miniature (conv, pooling, two fc layers): small enough that the C engine
    compiles in seconds; the recipes' generic rules (_conv, _linear, _last) all apply."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(8 * 12 * 12, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


@pytest.fixture(scope="module")
def lenet5(fashion_small):
    data = fashion_small.subset(300, 200, 200, seed=0)
    torch.manual_seed(0)
    model = Small()
    ds.fit(model, data.tensors("train"), data.tensors("val"), ds.TrainConfig(epochs=1, seed=0), progress=False)
    return model, data


@pytest.mark.parametrize("recipe,encodings", [("dct", {"dct/sparse"}), ("hashed", {"hashed/dense"})])
def test_builtin_recipe_loads_and_exports(lenet5, tmp_path, recipe, encodings):
    model, data = lenet5
    result = ds.compress(model, data, quick(recipe), progress=False)
    assert [s.stage for s in result.stages] == ["baseline", recipe.replace("hashed", "hash"), "code"]
    assert {r.encoding for r in result.layers} == encodings  # every layer in the stage's form
    assert result.ratio > 5
    path = tmp_path / f"{recipe}.dsz"
    path.write_bytes(result.data)
    x = data.tensors("test")[0][:50]
    want = result.model.eval()(x).detach()
    modes = ["dense", "compressed"] + (["engine"] if native.compiler() else [])
    for mode in modes:
        got = ds.load(path, mode=mode)(x)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, msg=mode)
    out = ds.export(path, tmp_path / f"{recipe}.onnx")  # refuses to write unless onnxruntime agrees
    assert out["max_abs_diff"] < 1e-4
    if native.compiler():
        c = export_c(path, tmp_path / f"{recipe}-c", inputs=data.x_test[:8])
        assert c["checked"] and c["argmax_agreement"] == 1.0
