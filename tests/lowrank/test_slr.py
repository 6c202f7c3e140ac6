import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune as tprune
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import deepshrink as ds
from deepshrink.errors import ConfigError
from deepshrink.lowrank import (
    NeuronScores,
    factorize_linear,
    least_important,
    neuron_importance,
    resolve_rank,
    slr_linear,
    slr_masks,
    slr_rank,
    truncated_svd,
)
from deepshrink.prune import current_weight, make_permanent
from deepshrink.train import TrainConfig, fit


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def slr_count(shape, k, r_s, unimportant):
    """Non-zero weights of SLR factors of rank k, the unimportant neurons keeping r_s components."""
    m, n = shape
    u = round(unimportant * m) + round(unimportant * n)
    masked = u * (k - r_s) if k > 1 and unimportant > 0 else 0
    return k * (m + n) - masked


# --- slr_rank ----------------------------------------------------------------------------------

def test_integer_rank_is_k_and_reduced_rank_is_an_int_or_a_fraction_of_k():
    assert slr_rank(10, (30, 50), 4, 0.5) == (10, 4)
    assert slr_rank(10, (30, 50), 0.5, 0.5) == (10, 5)
    assert slr_rank(10, (30, 50), 0.25, 0.5) == (10, 2)  # ⌊0.25·10⌋
    assert slr_rank(10, (30, 50), 0, 0.5) == (10, 0)
    assert slr_rank(10, (30, 50), 20, 0.5) == (10, 9)  # r_s stays below k
    assert slr_rank(100, (30, 50), 0.5, 0.5) == (30, 15)  # k clipped to min(m, n)
    assert slr_rank(1, (30, 50), 0.5, 0.5) == (1, 0)


@settings(max_examples=300, deadline=None, database=None)
@given(st.integers(1, 90), st.integers(1, 90), st.floats(0.001, 1.0),
       st.one_of(st.integers(0, 12), st.floats(0.0, 0.99)), st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.8]))
def test_fraction_rank_is_the_largest_k_whose_sparse_factors_fit_the_budget(m, n, f, reduced, unimportant):
    k, r_s = slr_rank(f, (m, n), reduced, unimportant)
    full, budget = min(m, n), f * m * n
    assert 1 <= k <= full and 0 <= r_s < k
    assert (k, r_s) == slr_rank(k, (m, n), reduced, unimportant)  # r_s follows the same rule as for an int k
    assert slr_count((m, n), k, r_s, unimportant) <= budget or k == 1
    if k < full:
        assert slr_count((m, n), k + 1, slr_rank(k + 1, (m, n), reduced, unimportant)[1], unimportant) > budget
    if unimportant == 0:  # no sparsity: the same k as truncated SVD at that fraction
        assert k == resolve_rank(f, (m, n))
    if k > 1:  # the count is what the masks keep
        mask_b, mask_a = slr_masks((m, n), k, r_s, torch.arange(round(unimportant * n)),
                                   torch.arange(round(unimportant * m)))
        assert int(mask_b.sum() + mask_a.sum()) == slr_count((m, n), k, r_s, unimportant)


@pytest.mark.parametrize("f", [0.1, 0.25, 0.5])
def test_slr_layer_keeps_at_most_the_fraction_of_weights_as_nonzeros(f):
    layer = nn.Linear(60, 40)
    scores = NeuronScores(torch.rand(60, generator=_gen(1)), torch.rand(40, generator=_gen(2)))
    fac = slr_linear(layer, scores, rank=f, reduced_rank=0.5, unimportant=0.5)
    nz = sum(int((current_weight(m) != 0).sum()) for m in (fac.first, fac.second))
    assert nz <= f * 40 * 60
    k = fac.first.out_features
    assert nz == slr_count((40, 60), k, slr_rank(k, (40, 60), 0.5, 0.5)[1], 0.5)


@pytest.mark.parametrize("bad", [-1, 1.0, 1.5, -0.1, True, "x", None])
def test_bad_reduced_rank_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="reduced_rank"):
        slr_rank(5, (10, 10), bad, 0.5)


@pytest.mark.parametrize("bad", [0, -1, 1.5, 0.0, True, "x", None])
def test_bad_rank_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="rank"):
        slr_rank(bad, (10, 10), 0.5, 0.5)
    scores = NeuronScores(torch.ones(10), torch.ones(10))
    with pytest.raises(ConfigError):
        slr_linear(nn.Linear(10, 10), scores, rank=bad)


def test_other_bad_inputs_are_config_errors():
    scores = NeuronScores(torch.ones(10), torch.ones(6))
    with pytest.raises(ConfigError, match="reduced rank"):
        slr_masks((6, 10), 4, 4, torch.tensor([0]), torch.tensor([0]))
    for frac in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="unimportant fraction"):
            least_important(torch.ones(5), frac)
    with pytest.raises(ConfigError, match="linear"):
        slr_linear(nn.Conv2d(10, 6, 1), scores)
    with pytest.raises(ConfigError, match="do not fit"):
        slr_linear(nn.Linear(6, 10), scores)  # scores of a 10 → 6 layer


def test_least_important_takes_the_lowest_scores_with_ties_by_position():
    s = torch.tensor([3.0, 1.0, 2.0, 1.0, 5.0])
    assert least_important(s, 0.4).tolist() == [1, 3]
    assert least_important(s, 0.6).tolist() == [1, 3, 2]
    assert least_important(s, 0.0).numel() == 0


# --- zero pattern ------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None, database=None)
@given(st.integers(2, 24), st.integers(2, 24), st.data(), st.sampled_from([0.1, 0.25, 0.5, 0.75]),
       st.integers(0, 2**16))
def test_only_the_trailing_components_of_unimportant_neurons_are_zero(m, n, data, unimportant, seed):
    k = data.draw(st.integers(2, min(m, n)))
    r_s = data.draw(st.integers(0, k - 1))
    g = _gen(seed)
    layer = nn.Linear(n, m)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(m, n, generator=g))
    scores = NeuronScores(torch.randperm(n, generator=g).float(), torch.randperm(m, generator=g).float())
    fac = slr_linear(layer, scores, rank=k, reduced_rank=r_s, unimportant=unimportant)
    # the least important neurons hold the lowest scores: here the smallest values of the permutations
    low_in = [i for i in range(n) if scores.inputs[i] < round(unimportant * n)]
    low_out = [j for j in range(m) if scores.outputs[j] < round(unimportant * m)]
    want_b = torch.ones(k, n)
    want_b[r_s:, low_in] = 0
    want_a = torch.ones(m, k)
    want_a[low_out, r_s:] = 0
    assert torch.equal(fac.first.weight_mask, want_b) and torch.equal(fac.second.weight_mask, want_a)
    a, b = truncated_svd(layer.weight, k)
    b_now, a_now = current_weight(fac.first), current_weight(fac.second)
    # zeros exactly where masked; everything else is the SVD factor, untouched
    assert torch.equal(b_now == 0, want_b == 0) and torch.equal(a_now == 0, want_a == 0)
    assert torch.equal(b_now[want_b == 1], b[want_b == 1]) and torch.equal(a_now[want_a == 1], a[want_a == 1])
    assert torch.equal(fac.second.bias, layer.bias)


@pytest.mark.parametrize("rank", [1, 7, 0.3])
def test_without_unimportant_neurons_slr_is_truncated_svd(rank):
    layer = nn.Linear(50, 30)
    scores = NeuronScores(torch.rand(50), torch.rand(30))
    slr = slr_linear(layer, scores, rank=rank, reduced_rank=0.5, unimportant=0.0)
    svd = factorize_linear(layer, rank=rank)
    assert not tprune.is_pruned(slr.first) and not tprune.is_pruned(slr.second)
    assert slr.first.out_features == svd.first.out_features
    x = torch.randn(16, 50)
    with torch.no_grad():
        assert torch.equal(slr(x), svd(x))


# --- importance --------------------------------------------------------------------------------

P_X, P_IN, P_OUT = [2, 7, 9], [3, 8, 15], [1, 12, 25]  # planted: model inputs, hidden 1 (20), hidden 2 (30)


def _scaled(rows, cols, out_f, in_f, g, small=1e-2):
    """±[0.5, 1.5) entries times 1 on planted rows/columns and ``small`` elsewhere."""
    w = (torch.rand(out_f, in_f, generator=g) + 0.5) * (torch.randint(0, 2, (out_f, in_f), generator=g) * 2 - 1)
    s_r, s_c = torch.full((out_f,), small), torch.full((in_f,), small)
    s_r[rows], s_c[cols] = 1.0, 1.0
    return w * s_r[:, None] * s_c[None, :]


def planted_model(seed=0):
    """12 → 20 → 30 → 4 in which P_X → P_IN → P_OUT carry everything (weights, activations and the loss)."""
    g = _gen(seed)
    model = nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 4))
    with torch.no_grad():
        model[0].weight.copy_(_scaled(P_IN, P_X, 20, 12, g))
        model[2].weight.copy_(_scaled(P_OUT, P_IN, 30, 20, g))
        model[4].weight.copy_(_scaled(range(4), P_OUT, 4, 30, g, small=0.0))  # the loss sees only P_OUT
        model[0].bias.zero_()
        model[2].bias.zero_()
    return model


def planted_batches(seed=0, n=4, size=64):
    g = _gen(seed)
    scale = torch.full((12,), 1e-2)
    scale[P_X] = 1.0
    return [(torch.randn(size, 12, generator=g) * scale, torch.randint(0, 4, (size,), generator=g)) for _ in range(n)]


@pytest.mark.parametrize("strategy", ["weight", "activation", "taylor"])
def test_planted_neurons_rank_first(strategy):
    model = planted_model()
    layers = {"first": model[0], "mid": model[2]}
    scores = neuron_importance(model, layers, strategy, planted_batches() if strategy != "weight" else ())
    assert set(scores) == {"first", "mid"}
    planted = {("first", "inputs"): P_X, ("first", "outputs"): P_IN, ("mid", "inputs"): P_IN, ("mid", "outputs"): P_OUT}
    for (name, side), idx in planted.items():
        s = getattr(scores[name], side)
        n = s.numel()
        assert s.shape == (layers[name].in_features if side == "inputs" else layers[name].out_features,)
        assert sorted(torch.topk(s, 3).indices.tolist()) == idx, (name, side, s)
        least = least_important(s, (n - 3) / n)
        assert sorted(least.tolist()) == sorted(set(range(n)) - set(idx))  # the planted ones are never dropped
        assert float(s[idx].min()) > 5 * float(s[least].max())


def test_activation_and_taylor_scores_follow_their_definitions():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 4))
    batches = [(torch.randn(32, 12), torch.randint(0, 4, (32,))) for _ in range(3)]
    want = {k: [torch.zeros(12), torch.zeros(20), torch.zeros(20), torch.zeros(30)] for k in ("activation", "taylor")}
    for x, y in batches:
        x = x.clone().requires_grad_(True)
        h0 = model[0](x)
        a0 = model[1](h0)
        h1 = model[2](a0)
        loss = F.cross_entropy(model[4](model[3](h1)), y, reduction="sum")
        grads = torch.autograd.grad(loss, [x, h0, a0, h1])
        for i, (t, gr) in enumerate(zip([x, h0, a0, h1], grads)):
            want["activation"][i] += t.detach().abs().sum(0) / 96
            want["taylor"][i] += (t * gr).detach().abs().sum(0) / 96
    for strategy, (fi, fo, mi, mo) in want.items():
        got = neuron_importance(model, {"first": model[0], "mid": model[2]}, strategy, batches)
        for s, w in ((got["first"].inputs, fi), (got["first"].outputs, fo), (got["mid"].inputs, mi),
                     (got["mid"].outputs, mo)):
            torch.testing.assert_close(s, w, rtol=1e-5, atol=1e-7)
    got = neuron_importance(model, {"mid": model[2]}, "weight")["mid"]
    assert torch.equal(got.inputs, model[2].weight.detach().abs().sum(0))
    assert torch.equal(got.outputs, model[2].weight.detach().abs().sum(1))


def test_importance_bad_arguments_are_config_errors():
    model = planted_model()
    with pytest.raises(ConfigError, match="importance must be one of"):
        neuron_importance(model, {"mid": model[2]}, "gradient", planted_batches())
    conv = nn.Conv2d(1, 2, 3)
    with pytest.raises(ConfigError, match="linear layers"):
        neuron_importance(model, {"conv": conv}, "weight")
    with pytest.raises(ConfigError, match="linear layers"):
        neuron_importance(model, {"relu": model[1]}, "activation", planted_batches())
    for strategy in ("activation", "taylor"):
        model.train()
        with pytest.raises(ConfigError, match="calibration batches"):
            neuron_importance(model, {"mid": model[2]}, strategy)
        assert model.training


@pytest.mark.parametrize("training", [True, False])
def test_taylor_leaves_no_gradients_hooks_or_mode_change(training):
    model = planted_model()
    model.train(training)
    neuron_importance(model, {"first": model[0], "mid": model[2]}, "taylor", planted_batches())
    assert all(p.grad is None for p in model.parameters())
    assert all(m.training == training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())


# --- fine-tuning, storing, loading -------------------------------------------------------------

def test_slr_zeros_survive_fine_tuning_saving_and_loading(fashion_small, tmp_path):
    model = ds.build_model("lenet-300-100")
    scores = neuron_importance(model, {"fc2": model.fc2}, "weight")["fc2"]
    model.fc2 = slr_linear(model.fc2, scores, rank=0.25, reduced_rank=0.5, unimportant=0.5)
    first, second = model.fc2.first, model.fc2.second
    assert (first.weight.shape, second.weight.shape) == ((25, 300), (100, 25))  # slr_rank(0.25, (100, 300), 0.5, 0.5)
    masks = {"first": first.weight_mask.clone(), "second": second.weight_mask.clone()}
    assert int((masks["first"] == 0).sum()) == 150 * 13 and int((masks["second"] == 0).sum()) == 50 * 13
    before = {"first": current_weight(first).clone(), "second": current_weight(second).clone()}

    fit(model, fashion_small.tensors("train"), fashion_small.tensors("val"), TrainConfig(epochs=1, batch_size=128),
        progress=False)
    for name, layer in (("first", first), ("second", second)):
        w, kept = current_weight(layer), masks[name] == 1
        assert torch.equal(w == 0, ~kept)  # zeros exactly at the masked positions, nowhere else
        assert float((w[kept] != before[name][kept]).float().mean()) > 0.99  # the kept weights trained

    make_permanent(model)
    assert not tprune.is_pruned(first) and not tprune.is_pruned(second)
    path = tmp_path / "slr.dsz"
    ds.save_model(model, path, fashion_small.input_spec)
    loaded = ds.load(path)
    state = loaded.dense_state_dict()
    for name, layer in (("first", first), ("second", second)):
        stored = state[f"fc2.{name}.weight"]
        assert torch.equal(stored == 0, masks[name] == 0)
        assert torch.equal(stored, layer.weight.detach())
    x, _ = fashion_small.tensors("test")
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert np.array_equal(loaded.predict(fashion_small.x_test), model(x).argmax(1).numpy())


@pytest.mark.parametrize("reduced, unimportant", [(float("nan"), 0.5), (0.5, float("nan")), (0.5, -0.5), (0.5, 1.0)])
def test_slr_rank_rejects_nan_and_out_of_range_fractions(reduced, unimportant):
    with pytest.raises(ConfigError):
        slr_rank(0.5, (60, 40), reduced, unimportant)


def test_a_model_with_slr_masks_still_attached_stores_its_masked_weights(tmp_path):
    from deepshrink.data import InputSpec
    from deepshrink.lowrank import NeuronScores

    torch.manual_seed(0)
    model = ds.build_model("lenet-300-100")
    model.fc2 = slr_linear(model.fc2, NeuronScores(torch.rand(300), torch.rand(100)), rank=20, reduced_rank=5)
    spec = InputSpec((1, 28, 28), "uint8", 1 / 255, (0.0,), (1.0,))
    ds.save_model(model, tmp_path / "m.dsz", spec)  # no make_permanent first
    assert tprune.is_pruned(model.fc2.first)  # the caller's model keeps its masks
    state = ds.load(tmp_path / "m.dsz").dense_state_dict()
    for name in ("first", "second"):
        layer = getattr(model.fc2, name)
        torch.testing.assert_close(state[f"fc2.{name}.weight"], current_weight(layer), rtol=0, atol=0)
    assert int((state["fc2.first.weight"] == 0).sum()) == 15 * 150  # k - r_s components of half the inputs
