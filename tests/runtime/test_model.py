"""CompressedModel: batches are chunked to the activation limit, predict checks its input
against the stored input spec, and loading stays light."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import deepshrink as ds
from deepshrink.errors import DataError

GOLDEN = Path(__file__).parents[1] / "fileformat" / "golden" / "lenet300-pruned-shared-v1.dsz"


@pytest.fixture(scope="module")
def model():
    return ds.load(GOLDEN)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 1, 28, 28), dtype=np.uint8)


def test_forward_chunks_a_batch_to_the_activation_limit(model):
    peak = model.plan.peak_elements
    small = ds.load(GOLDEN, limits=ds.Limits(max_activation_elements=7 * peak))
    assert small.max_batch == 7
    seen = []
    small.net.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    x = model.input_spec.apply(_images(100))
    with torch.no_grad():
        out = small(x)
        want = model(x)
    assert max(seen) == 7 and sum(seen) == 100
    torch.testing.assert_close(out, want, rtol=0, atol=1e-6)
    assert np.array_equal(small.predict(_images(100)), model.predict(_images(100)))


def test_a_network_over_the_limit_for_one_sample_is_refused():
    with pytest.raises(ds.FormatError, match="activation values"):
        ds.load(GOLDEN, limits=ds.Limits(max_activation_elements=1000))


def test_predict_refuses_float_input_for_a_uint8_spec(model):
    raw = _images(20)
    floats = raw.astype(np.float32) / 255
    with pytest.raises(DataError, match="uint8") as exc:
        model.predict(floats)
    assert "assume=" in str(exc.value)
    assert np.array_equal(model.predict(floats, assume="scaled"), model.predict(raw))
    assert np.array_equal(model.predict(raw.astype(np.int64), assume="raw"), model.predict(raw))
    normalized = model.input_spec.apply(raw).numpy()
    assert np.array_equal(model.predict(normalized, assume="normalized"), model.predict(raw))
    with pytest.raises(DataError, match="assume"):
        model.predict(raw, assume="percent")


def test_predict_accepts_images_without_the_channel_axis(model):
    raw = _images(10, seed=1)
    assert np.array_equal(model.predict(raw[:, 0]), model.predict(raw))
    assert np.array_equal(model.predict(torch.from_numpy(raw[:, 0])), model.predict(raw))


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e300])
def test_predict_refuses_non_finite_or_huge_input_without_a_warning(model, bad):
    x = np.zeros((3, 1, 28, 28))
    x[1, 0, 5, 5] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="NaN|range"):
            model.predict(x, assume="raw")


def test_load_imports_no_compiler_or_symbolic_maths():
    code = (
        "import sys, deepshrink; before = set(sys.modules); deepshrink.load(sys.argv[1]); "
        "heavy = ('torch._dynamo', 'sympy', 'torch._inductor', 'onnxruntime', 'rich', 'tensorly', 'scipy'); "
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in heavy or m in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(GOLDEN)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_loaded_network_with_batch_norm_trains_outside_no_grad():
    """Batch-norm statistics are not learnable: backward works and leaves them without gradient."""
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).eval()
    spec = ds.InputSpec(shape=(1, 4, 4), dtype="float32", scale=1.0, mean=(0.0,), std=(1.0,))
    net = ds.load(ds.pack_model(model, spec)[0])
    net(torch.randn(5, 1, 4, 4)).sum().backward()
    grads = {k: v.grad for k, v in net.net.named_graph_tensors().items()}
    assert grads["1.weight"] is not None and grads["2.weight"] is not None
    assert grads["2.running_mean"] is None and grads["2.running_var"] is None


def test_a_loaded_network_moves_like_any_module():
    """``.to()``, ``.float()`` and ``.cpu()`` work on a loaded network (nothing shadows nn.Module._apply)."""
    from torch import nn

    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    spec = ds.InputSpec(shape=(1, 4, 4), dtype="float32", scale=1.0, mean=(0.0,), std=(1.0,))
    net = ds.load(ds.pack_model(model, spec)[0])
    x = torch.randn(2, 1, 4, 4)
    assert torch.equal(net.to(torch.float32).float().cpu()(x), net(x))
