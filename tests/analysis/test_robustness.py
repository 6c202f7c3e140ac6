"""Weight robustness: noise injection and second-order (Fisher, Hutchinson) estimates, on a small
LeNet-300-100 trained on real Fashion-MNIST."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import deepshrink as ds
from deepshrink.analysis import robustness
from deepshrink.analysis.robustness import fisher_information, hessian_trace, noise_sensitivity, saliency
from deepshrink.errors import ConfigError
from deepshrink.prune import apply_mask, magnitude_mask, prunable_layers


def _ce_sum(out, y):
    return F.cross_entropy(out, y, reduction="sum")


@pytest.fixture(scope="module")
def trained(trained_mlp):
    return trained_mlp


@pytest.fixture(scope="module")
def val(fashion_small):
    x, y = fashion_small.tensors("val")
    return x[:500], y[:500]


@pytest.fixture(scope="module")
def scorer(val):
    x, y = val

    def evaluate(model):
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean())
    return evaluate


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_bits(model, snap):
    return all(torch.equal(v.view(torch.int32), snap[k].view(torch.int32)) if v.dtype == torch.float32
               else torch.equal(v, snap[k]) for k, v in model.state_dict().items())


def test_noise_restores_bit_exact_and_scale_zero_is_baseline(trained, scorer):
    snap = _snapshot(trained)
    layers = prunable_layers(trained)
    base = scorer(trained)
    res = noise_sensitivity(trained, layers, scorer, scales=(0.0, 0.3), repeats=2, seed=3)
    assert _same_bits(trained, snap)
    assert list(res) == list(layers)
    for rows in res.values():
        assert [r["scale"] for r in rows] == [0.0, 0.3]
        assert rows[0]["val"] == base and rows[0]["std"] == 0.0
        assert 0.0 <= rows[1]["val"] <= 1.0 and rows[1]["std"] >= 0.0
    # deterministic per seed, and a layer's numbers do not depend on the other layers analysed
    again = noise_sensitivity(trained, {"fc2": layers["fc2"]}, scorer, scales=(0.0, 0.3), repeats=2, seed=3)
    assert again["fc2"] == res["fc2"]


def test_noise_restores_when_evaluation_raises(trained, scorer):
    snap = _snapshot(trained)
    calls = []

    def failing(model):
        calls.append(1)
        if len(calls) == 2:  # the first perturbed evaluation
            raise RuntimeError("boom")
        return scorer(model)

    with pytest.raises(RuntimeError, match="boom"):
        noise_sensitivity(trained, {"fc1": trained.fc1}, failing, scales=(0.0, 1.0))
    assert _same_bits(trained, snap)


def test_accuracy_falls_with_noise(trained, scorer):
    rows = noise_sensitivity(trained, {"fc2": trained.fc2}, scorer, scales=(0.0, 0.5, 3.0, 10.0), repeats=2)["fc2"]
    vals = [r["val"] for r in rows]
    assert vals[0] > 0.7  # a trained model
    assert vals[3] < vals[1] and vals[3] < vals[0] - 0.2
    assert vals[2] <= vals[0]


def test_noise_on_pruned_layer_keeps_pruned_positions(trained, scorer):
    model = ds.build_model("lenet-300-100")
    model.load_state_dict(trained.state_dict())
    apply_mask(model.fc3, magnitude_mask(model.fc3.weight, sparsity=0.5))
    zeros = model.fc3.weight_mask == 0
    seen = []

    def check(m):
        with torch.no_grad():
            m(torch.zeros(1, 1, 28, 28))  # the hook recomputes weight
        seen.append(bool((m.fc3.weight[zeros] == 0).all()))
        return scorer(m)

    noise_sensitivity(model, {"fc3": model.fc3}, check, scales=(1.0,), repeats=1)
    assert seen == [True]


def test_noise_bad_settings(trained, scorer):
    with pytest.raises(ConfigError, match="scales"):
        noise_sensitivity(trained, {"fc1": trained.fc1}, scorer, scales=(-1.0,))
    with pytest.raises(ConfigError, match="repeats"):
        noise_sensitivity(trained, {"fc1": trained.fc1}, scorer, repeats=0)
    with pytest.raises(ConfigError, match="not a module"):
        noise_sensitivity(trained, {"x": nn.Linear(2, 2)}, scorer)


def _loop_fisher(model, name, x, y):
    """The diagonal Fisher of one weight by hand: one backward pass per sample."""
    w = dict(model.named_parameters())[name]
    acc = torch.zeros_like(w, dtype=torch.float64)
    for i in range(len(x)):
        (g,) = torch.autograd.grad(_ce_sum(model(x[i : i + 1]), y[i : i + 1]), [w])
        acc += g.double() ** 2
    return (acc / len(x)).float().numpy()


def test_fisher_per_sample_vmap_matches_loop(trained, val, monkeypatch):
    x, y = val
    batches = [((x[:8],), y[:8]), ((x[8:30],), y[8:30])]
    layers = {"fc2": trained.fc2, "fc3": trained.fc3}
    was = trained.training
    lp = fisher_information(trained, layers, batches, _ce_sum, samples=13, vectorize=False)

    def no_loop(*a):
        raise AssertionError("the vectorised path fell back to the loop")
    monkeypatch.setattr(robustness, "_per_sample_loop", no_loop)
    vm = fisher_information(trained, layers, batches, _ce_sum, samples=13)
    monkeypatch.undo()
    assert trained.training == was and all(p.grad is None for p in trained.parameters())
    for n in layers:
        d = vm[n]["diag"]
        assert d.dtype == np.float32 and d.shape == tuple(layers[n].weight.shape)
        np.testing.assert_allclose(d, lp[n]["diag"], rtol=1e-4, atol=1e-9)
        assert vm[n]["trace"] == pytest.approx(float(d.astype(np.float64).sum()), rel=1e-5)
        assert vm[n]["per_weight"] == pytest.approx(vm[n]["trace"] / d.size, rel=1e-6)
    # per-sample, not per-batch: the hand loop over the first 13 samples
    np.testing.assert_allclose(vm["fc3"]["diag"], _loop_fisher(trained, "fc3.weight", x[:13], y[:13]),
                               rtol=1e-4, atol=1e-9)
    per_batch = sum(torch.autograd.grad(_ce_sum(trained(x[:13]), y[:13]), [trained.fc3.weight])[0] ** 2) / 13
    assert not np.allclose(vm["fc3"]["diag"].sum(), float(per_batch.sum()), rtol=1e-2)


def test_fisher_falls_back_to_loop_when_vmap_fails(trained, val, monkeypatch):
    x, y = val
    batches = [((x[:10],), y[:10])]
    want = fisher_information(trained, {"fc3": trained.fc3}, batches, _ce_sum, vectorize=False)

    def no_batching_rule(*a):
        raise RuntimeError("vmap: an op without a batching rule")
    monkeypatch.setattr(robustness, "_per_sample_vmap", no_batching_rule)
    got = fisher_information(trained, {"fc3": trained.fc3}, batches, _ce_sum)
    np.testing.assert_array_equal(got["fc3"]["diag"], want["fc3"]["diag"])


def test_fisher_on_conv_model_and_saliency():
    torch.manual_seed(0)
    model = ds.build_model("lenet-5")
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    layers = prunable_layers(model)
    vm = fisher_information(model, layers, [((x,), y)], _ce_sum)
    lp = fisher_information(model, layers, [((x,), y)], _ce_sum, vectorize=False)
    for n, m in layers.items():
        assert vm[n]["diag"].shape == tuple(m.weight.shape)
        np.testing.assert_allclose(vm[n]["diag"], lp[n]["diag"], rtol=1e-3, atol=1e-10)
    w = layers["conv1"].weight
    s = saliency(w, vm["conv1"]["diag"])
    np.testing.assert_allclose(s, 0.5 * vm["conv1"]["diag"].astype(np.float64) * w.detach().double().numpy() ** 2)
    with pytest.raises(ConfigError, match="shape"):
        saliency(w, vm["fc1"]["diag"])
    with pytest.raises(ConfigError, match="samples"):
        fisher_information(model, layers, [], _ce_sum)


def _exact_trace(model, name, x, y):
    params = dict(model.named_parameters())

    def f(w):
        return _ce_sum(functional_call(model, {**params, name: w}, (x,)), y) / len(x)

    h = torch.autograd.functional.hessian(f, params[name].detach())
    return float(h.reshape(params[name].numel(), -1).diagonal().sum())


def test_hutchinson_matches_exact_hessian_trace():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    layers = {"hidden": model[0], "out": model[2]}
    est = hessian_trace(model, layers, [((x[:25],), y[:25]), ((x[25:],), y[25:])], _ce_sum, probes=300, seed=1)
    for n, key in (("hidden", "0.weight"), ("out", "2.weight")):
        exact = _exact_trace(model, key, x, y)
        assert exact > 0
        assert abs(est[n]["trace"] - exact) < max(4 * est[n]["std"], 0.02 * exact), (n, est[n], exact)
        assert abs(est[n]["trace"] - exact) < 0.1 * exact
    assert est == hessian_trace(model, layers, [((x[:25],), y[:25]), ((x[25:],), y[25:])], _ce_sum, probes=300, seed=1)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
