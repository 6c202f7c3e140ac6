"""The ``native`` kernel of the compressed runtime: the C engine's kernels through ctypes on the
packed layout, and loading without a C compiler (``CC=/nonexistent``), where ``native`` is no
candidate and everything else works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import deepshrink as ds
from deepshrink.runtime import kernels as K

native = pytest.importorskip("deepshrink.engine.native", reason="the C engine is not on this branch")

sys.path.insert(0, str(Path(__file__).parent))
from test_compressed import SPEC, Convs, _agree, _lenet5, _prune_share, tiny_compressed_model  # noqa: E402

needs_cc = pytest.mark.skipif(native.load() is None, reason=f"no C engine here: {native.reason()}")


@pytest.fixture(scope="module")
def lenet300(tmp_path_factory):
    path = tmp_path_factory.mktemp("native") / "lenet300.dsz"
    ds.save_model(tiny_compressed_model(), path, SPEC)
    return path


@needs_cc
def test_native_runs_every_layer_of_a_lenet5_and_matches_dense(fashion):
    images = SPEC.apply(fashion.x_test[:64])
    data = ds.pack_model(_lenet5(), SPEC)[0]
    dense = ds.load(data)
    model = ds.load(data, mode="compressed", kernels="native")
    assert {k["kernel_batch1"] for k in model.kernels} == {"native"}
    with torch.no_grad():
        for n in (1, 7, 64):
            _agree(model(images[:n]), dense(images[:n]))


@needs_cc
def test_native_keeps_the_packed_weight_only(lenet300):
    model = ds.load(lenet300, mode="compressed", kernels="native")
    fc1 = model.kernels[0]
    # 8% of 300x784 weights at 5 bits with gaps: a few bytes per nonzero, far below dense
    assert fc1["weight_bytes_resident"] < fc1["weight_bytes_dense"] / 10
    kernel = model.net.choices["fc1"].small
    assert isinstance(kernel, K.NativeKernel) and not hasattr(kernel, "w")
    want = ds.load(lenet300).dense_state_dict()
    got = model.dense_state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


@needs_cc
def test_prefer_memory_keeps_the_fewest_bytes_and_matches_dense(lenet300, fashion):
    """prefer="memory": per layer the correct kernel holding the fewest bytes, one for every batch."""
    fast = ds.load(lenet300, mode="compressed")
    small = ds.load(lenet300, mode="compressed", prefer="memory")
    for k in small.kernels:
        assert k["kernel_batch1"] == k["kernel_batchN"]
    assert small.net.weight_bytes_resident <= fast.net.weight_bytes_resident
    assert small.net.weight_bytes_resident < sum(k["weight_bytes_dense"] for k in small.kernels) / 10
    images = SPEC.apply(fashion.x_test[:64])
    dense = ds.load(lenet300)
    with torch.no_grad():
        for n in (1, 64):
            _agree(small(images[:n]), dense(images[:n]))
    with pytest.raises(ds.DeepshrinkError, match="prefer"):
        ds.load(lenet300, mode="compressed", prefer="fast")
    with pytest.raises(ds.DeepshrinkError, match="prefer"):
        ds.load(lenet300, prefer="memory")


@needs_cc
def test_native_runs_grouped_dilated_same_and_1d_convolutions():
    torch.manual_seed(11)
    net = Convs().eval()
    _prune_share(net, np.random.default_rng(11), {"_default": 0.4}, {"_default": 6})
    x = torch.randn(5, 1, 28, 28)
    data = ds.pack_model(net, SPEC)[0]
    model = ds.load(data, mode="compressed", kernels="native")
    assert {k["kernel_batch1"] for k in model.kernels} == {"native"}
    with torch.no_grad():
        want = net(x)
        _agree(model(x), want)
        _agree(model(x[:1]), want[:1])


@needs_cc
def test_native_is_a_measured_candidate(lenet300):
    model = ds.load(lenet300, mode="compressed")
    for k in model.kernels:
        assert "native" in k["timings_us"] and "native" not in k["rejected"]


NO_CC = """
import json, sys, torch, deepshrink as ds
from deepshrink.errors import ConfigError
path = sys.argv[1]
model = ds.load(path, mode="compressed")
x = torch.randn(9, 1, 28, 28)
with torch.no_grad():
    diff = float((model(x) - ds.load(path)(x)).abs().max())
try:
    ds.load(path, mode="compressed", kernels="native")
    forced = None
except ConfigError as exc:
    forced = str(exc)
print(json.dumps({"kernels": model.kernels, "diff": diff, "forced": forced}))
"""


def test_without_a_compiler_native_is_no_candidate_and_load_works(lenet300, tmp_path):
    """``CC`` naming no compiler: the engine cannot be built, so ``native`` is rejected with the
    reason, the other kernels run, and forcing ``native`` is a ConfigError (a fresh process, so the
    engine's once-per-process build state is not shared with the other tests)."""
    env = {**os.environ, "CC": "/nonexistent/cc", "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(Path(ds.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", NO_CC, str(lenet300)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["diff"] <= 1e-5
    for k in res["kernels"]:
        assert "compiler" in k["rejected"]["native"]
        assert k["kernel_batch1"] != "native" and k["kernel_batchN"] != "native"
    assert res["forced"] is not None and "native" in res["forced"] and "compiler" in res["forced"]


@needs_cc
def test_the_linear_fast_path_and_the_wrapper_agree(lenet300):
    """Float32 input of the layer's width calls ``ds_linear`` directly; anything else goes through
    the engine's checked wrapper (which refuses a wrong width)."""
    kernel = ds.load(lenet300, mode="compressed", kernels="native").net.choices["fc1"].small
    x = torch.randn(6, 784)
    fast = kernel.fn(x)
    assert fast.dtype == torch.float32 and fast.shape == (6, 300)
    torch.testing.assert_close(kernel.fn(x.double()), fast, rtol=0, atol=1e-6)
    torch.testing.assert_close(kernel.fn(x.t().contiguous().t()), fast, rtol=0, atol=0)  # not contiguous
    assert kernel.fn(x[:0]).shape == (0, 300)
    torch.testing.assert_close(kernel.fn(x.view(2, 3, 784)), fast.view(2, 3, 300), rtol=0, atol=0)
    with pytest.raises(ValueError, match="784"):
        kernel.fn(torch.randn(2, 783))
