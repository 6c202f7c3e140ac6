"""A small trained LeNet-300-100 and a quick recipe for the analysis and budget tests."""

import pytest
import torch

import deepshrink as ds
from deepshrink.pipeline.context import CompressContext
from deepshrink.train import get_objective


@pytest.fixture(scope="module")
def trained(fashion_small):
    torch.manual_seed(0)
    model = ds.build_model("lenet-300-100")
    ds.fit(model, fashion_small.tensors("train"), fashion_small.tensors("val"),
           ds.TrainConfig(epochs=3, seed=0), progress=False)
    return model.eval()


@pytest.fixture(scope="module")
def ctx(trained, fashion_small):
    return CompressContext.create(trained, fashion_small, get_objective("classify"), progress=False)


QUICK = """
name = "quick"
[[stages]]
kind = "prune"
steps = 1
[stages.retrain]
epochs = 1
[stages.layers]
_linear = { sparsity = 0.9 }
[[stages]]
kind = "share"
[stages.finetune]
epochs = 1
[stages.layers]
_default = { bits = 5 }
[[stages]]
kind = "code"
coder = "ans"
"""


@pytest.fixture(scope="module")
def quick_recipe(tmp_path_factory):
    p = tmp_path_factory.mktemp("r") / "quick.toml"
    p.write_text(QUICK)
    return ds.load_recipe(p)
