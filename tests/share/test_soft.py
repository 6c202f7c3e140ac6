"""Soft weight-sharing (Ullrich et al. 2017): the mixture prior, the snapping, the stage's settings
and a compression end to end on real Fashion-MNIST samples."""

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import gamma, norm
from torch import nn

import deepshrink as ds
from deepshrink.errors import ConfigError
from deepshrink.recipes import Recipe, ShareStage
from deepshrink.share import Mixture, MixturePrior, ShareMethod, assign, merge_components, snap
from deepshrink.share import soft as soft_module


def _prior(w, components=6, seed=0):
    prior = MixturePrior(w, components, zero_mix=0.9, zero_gamma=(50.0, 0.2), gamma=(20.0, 0.1)).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # away from the symmetric start, so that every term matters
        prior.logit_param.copy_(torch.randn(components - 1, generator=g, dtype=torch.float64))
        prior.log_prec_param.add_(0.1 * torch.randn(components, generator=g, dtype=torch.float64))
        prior.mean_param.add_(0.1 * torch.randn(components - 1, generator=g, dtype=torch.float64))
    return prior


def test_log_likelihood_matches_a_direct_computation(monkeypatch):
    monkeypatch.setattr(soft_module, "_CHUNK", 64)  # several chunks
    w = torch.randn(300, dtype=torch.float64) * 0.3
    prior = _prior(w)
    mix = prior.mixture()
    assert mix.means[0] == 0 and math.isclose(mix.mix[0], 0.9) and math.isclose(mix.mix.sum(), 1)
    v = w.numpy()[:, None]
    direct = logsumexp(np.log(mix.mix) + norm.logpdf(v, mix.means, np.exp(-0.5 * mix.log_precisions)), axis=1).sum()
    np.testing.assert_allclose(prior.log_prob(w).item(), direct, rtol=1e-12)
    # the hyper-prior: log Gamma densities of the precisions, up to their constants
    lam = np.exp(mix.log_precisions)
    shapes, rates = np.array([50.0] + [20.0] * 5), np.array([0.2] + [0.1] * 5)
    hyper = gamma.logpdf(lam, shapes, scale=1 / rates) - (shapes * np.log(rates) - np.array([math.lgamma(a) for a in shapes]))
    np.testing.assert_allclose(prior.log_hyperprior().item(), hyper.sum(), rtol=1e-12)


def test_gradients_match_autograd_through_logsumexp(monkeypatch):
    monkeypatch.setattr(soft_module, "_CHUNK", 100)
    w = (torch.randn(250, dtype=torch.float64) * 0.3).requires_grad_(True)
    prior = _prior(w.detach(), seed=1)
    params = [w, *prior.parameters()]
    reference = torch.autograd.grad(torch.logsumexp(prior.component_log_probs(w), 1).sum(), params)
    fast = torch.autograd.grad(prior.log_prob(w), params)
    for a, b in zip(reference, fast, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-10)


def test_prior_starts_evenly_over_the_weights_range_and_checks_its_settings():
    w = torch.linspace(-0.5, 1.0, 100)
    mix = MixturePrior(w, 4).mixture()
    np.testing.assert_allclose(mix.means, [0, -0.5, 0.25, 1.0], atol=1e-6)
    with pytest.raises(ConfigError, match="components"):
        MixturePrior(w, 1)
    with pytest.raises(ConfigError, match="zero_mix"):
        MixturePrior(w, 4, zero_mix=1.0)
    with pytest.raises(ConfigError, match="not all equal"):
        MixturePrior(torch.zeros(10), 4)


def test_kmeans_start_puts_the_means_on_the_weights_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([-0.3, -0.1, 0.0, 0.2, 0.4])
    w = (centres.repeat_interleave(200) + 0.005 * torch.randn(1000, generator=g)).double()
    w[:50] = 0  # pruned weights: the zero component's, not a cluster of their own
    mix = MixturePrior(w, 5, zero_gamma=(101.0, 0.01), start="kmeans").mixture()
    np.testing.assert_allclose(np.sort(mix.means[1:]), [-0.3, -0.1, 0.2, 0.4], atol=2e-3)
    std = np.exp(-0.5 * mix.log_precisions)
    assert std[0] == pytest.approx(0.01, rel=1e-5)  # the zero component at its hyper-prior's mode
    assert np.all((std[1:] > 2e-3) & (std[1:] < 1e-2))  # the others at their clusters' spread
    j = assign(w.numpy(), mix)
    assert np.all((j == 0) == (np.abs(w.numpy()) < 0.05))
    with pytest.raises(ConfigError, match="prior start"):
        MixturePrior(w, 5, start="uniform")


def test_merge_joins_coinciding_components_only():
    mix = Mixture(np.array([0.0, 0.5, 0.5001, -0.4]), np.log(np.array([1e4, 400.0, 400.0, 400.0])),
                  np.array([0.7, 0.1, 0.1, 0.1]))
    merged = merge_components(mix, 1e-2)
    assert len(merged) == 3
    np.testing.assert_allclose(merged.means, [0.0, 0.50005, -0.4])
    np.testing.assert_allclose(merged.mix, [0.7, 0.2, 0.1])
    assert len(merge_components(mix, 0.0)) == 4


def test_snap_leaves_at_most_j_values_with_exact_zeros():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 5))
    layers = {"0": model[0], "2": model[2]}
    mix = Mixture(np.array([0.0, -0.15, -0.05, 0.08, 0.15]), np.full(5, 2 * np.log(1 / 0.04)), np.full(5, 0.2))
    expected = {n: assign(m.weight.detach().numpy(), mix) for n, m in layers.items()}
    report = snap(layers, mix)
    values = torch.cat([m.weight.detach().reshape(-1) for m in layers.values()])
    assert len(torch.unique(values)) <= 5
    for n, m in layers.items():
        j = expected[n]
        wn = m.weight.detach().numpy()
        assert np.all(wn[j == 0] == 0) and np.all(wn[j != 0] == mix.means[j[j != 0]].astype(np.float32))
        assert report[n]["nonzero"] == int((j != 0).sum()) > 0
    assert 0 < (values == 0).sum() < len(values)


def test_snap_with_tuning_shares_the_snapped_values_as_centroids():
    from deepshrink.share import centroids_of, finalize, is_shared

    torch.manual_seed(0)
    lin = nn.Linear(40, 10)
    mix = Mixture(np.array([0.0, -0.1, -0.05, 0.05, 0.1, 0.3]), np.full(6, 2 * np.log(1 / 0.04)), np.full(6, 1 / 6))
    plain = nn.Linear(40, 10)
    plain.load_state_dict(lin.state_dict())
    snap({"a": plain}, mix)
    snap({"a": lin}, mix, tune=True)
    assert is_shared(lin) and len(centroids_of(lin)) <= 5
    torch.testing.assert_close(lin.weight.detach(), plain.weight.detach(), rtol=0, atol=0)
    finalize(lin)
    assert torch.equal(lin.weight.detach(), plain.weight.detach())


# --- the stage ------------------------------------------------------------------------------------

def _stage(**raw):
    return ShareStage.parse({"kind": "share", "method": "soft", "layers": {"_default": {"soft": True}}, **raw}, "stages[0]")


@pytest.mark.parametrize(("raw", "match"), [
    ({"components": 1}, "components .* 2..256"),
    ({"components": 257}, "components .* 2..256"),
    ({"components": 4.0}, "components"),
    ({"tau": 0}, "tau must be > 0"),
    ({"tau": float("inf")}, "tau must be a finite number"),
    ({"zero_mix": 1.0}, r"zero_mix .* \(0, 1\)"),
    ({"zero_mix": 0}, r"zero_mix .* \(0, 1\)"),
    ({"gamma_shape": 0.5}, "gamma_shape must be >= 1"),
    ({"zero_gamma_rate": -1.0}, "zero_gamma_rate must be > 0"),
    ({"merge_kl": -0.1}, "merge_kl must be >= 0"),
    ({"prior_start": "uniform"}, r"prior_start must be one of \['even', 'kmeans'\]"),
    ({"method": "fuzzy"}, r"method must be one of \['kmeans', 'soft'\]"),
    ({"train": {"keep_best": True}}, "keep_best must be false"),
    ({"train": {"epochs": -1}}, r"train: epochs"),
    ({"layers": {"_default": {"bits": 4}}}, "bits is a setting of method 'kmeans'"),
    ({"layers": {"_default": {"soft": 1}}}, "wrong type"),
    ({"layers": {"_default": {"soft": False}}}, None),
])
def test_soft_settings_are_checked(raw, match):
    if match is None:  # no layer selected: refused when the stage meets a model
        with pytest.raises(ConfigError, match="nothing to share .* 'soft'"):
            _stage(**raw).shared({"fc1": "linear"})
        return
    with pytest.raises(ConfigError, match=match):
        _stage(**raw)


def test_kmeans_stays_the_default_and_refuses_soft_rules():
    stage = ShareStage.parse({"kind": "share", "layers": {"_default": {"bits": 5}}}, "s")
    assert stage.method is ShareMethod.KMEANS and stage.bits({"fc1": "linear"}) == {"fc1": 5}
    with pytest.raises(ConfigError, match="soft is a setting of method 'soft'"):
        ShareStage.parse({"kind": "share", "layers": {"_default": {"soft": True}}}, "s")
    for s in (stage, _stage(tau=1e-3, components=8)):
        assert ShareStage.parse(s.to_dict(), "again") == s
    assert ds.load_recipe("deep-compression").stages[1].method is ShareMethod.KMEANS


def test_soft_sharing_end_to_end_loads_evaluates_and_exports(fashion_small, tmp_path):
    import onnx

    torch.manual_seed(0)
    model = ds.build_model("lenet-300-100")
    train = fashion_small.subset(1000, 300, 300, seed=0)
    ds.fit(model, train.tensors("train"), train.tensors("val"), ds.TrainConfig(epochs=2, seed=0), progress=False)
    recipe = Recipe.from_dict({"name": "soft-quick", "stages": [
        {"kind": "share", "method": "soft", "components": 8, "tau": 0.05, "zero_mix": 0.5, "float16": True,
         "zero_gamma_shape": 50.0, "zero_gamma_rate": 0.05, "gamma_shape": 50.0, "gamma_rate": 0.05,
         "train": {"epochs": 1, "lr": 1e-3}, "finetune": {"epochs": 1, "lr": 1e-4},
         "layers": {"_default": {"soft": True}}},
        {"kind": "code", "coder": "huffman"},
    ]})
    with torch.no_grad():  # as a prune stage leaves it: the prior clusters the survivors, the zeros stay
        model.fc1.weight[:, ::2] = 0
    result = ds.compress(model, train, recipe, progress=False)
    assert torch.all(result.model.fc1.weight[:, ::2] == 0)
    detail = result.stages[1].detail
    assert [s.stage for s in result.stages] == ["baseline", "share", "code"]
    assert detail["components_after_merge"] <= 8
    values = torch.cat([p.detach().reshape(-1) for n, p in result.model.named_parameters() if n.endswith("weight")])
    assert 0 < (values == 0).float().mean() < 1
    # per layer at most J - 1 non-zero values (the fine-tuned centroids of the snapped means)
    for n, p in result.model.named_parameters():
        if n.endswith("weight"):
            assert len(torch.unique(p[p != 0])) <= 7
    assert result.ratio > 4  # one epoch clusters little: the accuracy is not the point here, the file is
    assert result.file_accuracy == pytest.approx(ds.evaluate(result.model, train.tensors("test")), abs=1e-6)
    path = tmp_path / "soft.dsz"
    path.write_bytes(result.data)
    loaded = ds.load(path)
    x = train.tensors("test")[0][:100]
    np.testing.assert_array_equal(loaded.predict(train.x_test[:100]), result.model(x).argmax(1).numpy())
    ds.export(path, tmp_path / "soft.onnx")
    assert any(n.op_type == "Gemm" for n in onnx.load(str(tmp_path / "soft.onnx")).graph.node)
    out = ds.export(path, tmp_path / "engine", "c", inputs=[train.x_test[:32]])
    assert (tmp_path / "engine" / "model.c").exists()
    if out.get("checked"):
        assert out["argmax_agreement"] == 1.0
