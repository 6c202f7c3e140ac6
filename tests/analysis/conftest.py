"""The analysis and budget tests share the root conftest's trained LeNet-300-100 and quick recipe."""

import pytest

from deepshrink.pipeline.context import CompressContext
from deepshrink.train import get_objective


@pytest.fixture(scope="module")
def trained(trained_mlp):
    return trained_mlp


@pytest.fixture(scope="module")
def ctx(trained, fashion_small):
    return CompressContext.create(trained, fashion_small, get_objective("classify"), progress=False)


@pytest.fixture(scope="module")
def quick_recipe(make_recipe):
    return make_recipe(coder="ans")
