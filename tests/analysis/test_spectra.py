"""Singular-value spectra before and after magnitude pruning."""

import json

import numpy as np
import pytest
import torch

import deepshrink as ds
from deepshrink.analysis.spectra import (
    compare_spectra,
    layer_spectra,
    rank_energy,
    singular_spectrum,
    spectra_before_after,
    stable_rank,
    truncation_error,
)
from deepshrink.errors import ConfigError
from deepshrink.prune import magnitude_mask

SCHEMA = {"layer": str, "sparsity": float, "dense": list, "pruned": list, "rank90_dense": int,
          "rank90_pruned": int, "stable_rank_dense": float, "stable_rank_pruned": float}


def _with_spectrum(m, n, s, seed=0):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, m)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    full = np.zeros(min(m, n))
    full[: len(s)] = s
    return (u[:, : len(full)] * full) @ v[:, : len(full)].T


def test_known_low_rank_matrix():
    w = _with_spectrum(30, 20, [10.0, 5.0, 1.0])
    s = singular_spectrum(w)
    assert s.shape == (20,) and np.all(np.diff(s) <= 1e-12)
    np.testing.assert_allclose(s[:3], [10, 5, 1], rtol=1e-10)
    assert np.all(s[3:] < 1e-10)
    assert rank_energy(s) == 2  # 125/126 ≥ 0.9 > 100/126
    assert rank_energy(s, 0.999) == 3
    assert stable_rank(s) == pytest.approx(126 / 100)
    assert truncation_error(s, 1) == pytest.approx(np.sqrt(26 / 126))
    assert truncation_error(s, 3) == pytest.approx(0.0, abs=1e-10)
    assert rank_energy(np.zeros(4)) == 0 and stable_rank(np.zeros(4)) == 0.0


def test_conv_kernel_is_out_by_in_kh_kw():
    w = torch.randn(6, 3, 5, 5)
    np.testing.assert_allclose(singular_spectrum(w), np.linalg.svd(w.double().reshape(6, 75).numpy(), compute_uv=False))
    with pytest.raises(ConfigError, match="matrix"):
        singular_spectrum(torch.randn(7))


def test_pruned_spectrum_of_random_matrix_and_json():
    torch.manual_seed(0)
    w = torch.randn(100, 80)
    rec = spectra_before_after(w, 0.9, layer="fc")
    mask = magnitude_mask(w, sparsity=0.9)
    np.testing.assert_allclose(rec["pruned"], singular_spectrum(w * mask))
    np.testing.assert_allclose(rec["dense"], singular_spectrum(w))
    assert int((mask == 0).sum()) == 7200
    for key, typ in SCHEMA.items():
        assert isinstance(rec[key], typ), key
    assert rec["layer"] == "fc" and rec["sparsity"] == 0.9 and len(rec["pruned"]) == 80
    assert all(isinstance(v, float) for v in rec["dense"] + rec["pruned"])
    assert rec["pruned"][0] < rec["dense"][0] and 0 < rec["energy_kept"] < 1
    assert len(rec["ranks"]) == len(rec["error_dense"]) == len(rec["error_pruned"])
    assert all(0 <= e <= 1 for e in rec["error_dense"] + rec["error_pruned"])
    assert json.loads(json.dumps(rec)) == rec
    with pytest.raises(ConfigError, match="sparsity"):
        spectra_before_after(w, 1.0)


def test_pruning_a_low_rank_matrix_raises_its_rank():
    # the question the spectra answer: sparsifying an exactly low-rank matrix spreads its energy
    w = torch.from_numpy(_with_spectrum(100, 80, [10.0, 8.0, 6.0], seed=1)).float()
    rec = spectra_before_after(w, 0.8)
    assert rec["rank90_dense"] <= 3
    assert rec["rank90_pruned"] > rec["rank90_dense"]
    assert rec["stable_rank_pruned"] > rec["stable_rank_dense"]
    assert rec["error_pruned"][-1] > rec["error_dense"][-1]


def test_layer_spectra_and_compare_measured_sparsity():
    torch.manual_seed(0)
    model = ds.build_model("lenet-5")
    recs = layer_spectra(model, (0.5, 0.9))
    layers = [n for n, _ in model.named_modules() if n and hasattr(_, "weight") and _.weight.ndim >= 2]
    assert [r["layer"] for r in recs] == [n for n in layers for _ in (0.5, 0.9)]
    conv1 = next(r for r in recs if r["layer"] == "conv1")
    assert len(conv1["dense"]) == min(model.conv1.weight.shape[0], model.conv1.weight[0].numel())
    w = model.fc1.weight.detach()
    pruned = w * magnitude_mask(w, sparsity=0.75)
    rec = compare_spectra(w, pruned, layer="fc1")
    assert rec["sparsity"] == pytest.approx(0.75, abs=1e-3)
    with pytest.raises(ConfigError, match="shape"):
        compare_spectra(w, pruned[:, :10])
