import pytest
import torch
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.prune import apply_mask, magnitude_mask, make_permanent, prunable_layers, sparsity_of
from deepshrink.train import TrainConfig, fit


def test_mask_keeps_largest_magnitudes_exactly():
    w = torch.tensor([[0.1, -5.0, 0.3], [2.0, -0.05, 0.0]])
    m = magnitude_mask(w, sparsity=0.5)
    assert m.tolist() == [[0, 1, 0], [1, 0, 0]] or m.sum() == 3
    assert m[0, 1] == 1 and m[1, 0] == 1 and m[1, 2] == 0
    assert int(m.sum()) == 3
    t = magnitude_mask(w, threshold=0.2)
    assert t.tolist() == [[0, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.9, 0.99])
def test_mask_sparsity_is_exact(sparsity):
    w = torch.randn(64, 100)
    m = magnitude_mask(w, sparsity=sparsity)
    assert int((m == 0).sum()) == round(sparsity * w.numel())


def test_mask_rejects_bad_arguments():
    w = torch.randn(3, 3)
    with pytest.raises(ConfigError):
        magnitude_mask(w)
    with pytest.raises(ConfigError):
        magnitude_mask(w, sparsity=1.0)
    with pytest.raises(ConfigError):
        magnitude_mask(w, sparsity=0.5, threshold=0.1)


def test_masks_stay_zero_through_retraining_and_become_permanent():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 3))
    x, y = torch.randn(256, 20), torch.randint(0, 3, (256,))
    masks = {}
    for name, m in prunable_layers(model).items():
        masks[name] = magnitude_mask(m.weight, sparsity=0.7)
        apply_mask(m, masks[name])
    before = {n: m.weight_orig.detach().clone() for n, m in prunable_layers(model).items()}
    fit(model, (x, y), (x, y), TrainConfig(epochs=3, lr=1e-2, keep_best=False), progress=False)
    for name, m in prunable_layers(model).items():
        assert torch.all(m.weight[masks[name] == 0] == 0)
        assert not torch.equal(m.weight_orig, before[name])  # it did train
    make_permanent(model)
    for name, m in prunable_layers(model).items():
        assert isinstance(m.weight, nn.Parameter) and not hasattr(m, "weight_mask")
        assert torch.all(m.weight[masks[name] == 0] == 0)
    assert all(abs(s - 0.7) < 0.01 for s in sparsity_of(model).values())


def test_iterative_masks_only_tighten():
    lin = nn.Linear(50, 50)
    apply_mask(lin, magnitude_mask(lin.weight, sparsity=0.5))
    first = lin.weight_mask.clone()
    apply_mask(lin, magnitude_mask(lin.weight_orig * lin.weight_mask, sparsity=0.8))
    assert torch.all(lin.weight_mask <= first)
    assert abs(float((lin.weight_mask == 0).float().mean()) - 0.8) < 0.01


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_masking_after_the_step_trains_like_the_forward_hook(monkeypatch, optimizer):
    import contextlib

    import deepshrink.train.loop as loop

    def masked_model():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 3))
        for m in prunable_layers(model).values():
            apply_mask(m, magnitude_mask(m.weight, sparsity=0.6))
        return model

    x, y = torch.randn(256, 20), torch.randint(0, 3, (256,))
    cfg = TrainConfig(epochs=2, lr=1e-2, batch_size=32, optimizer=optimizer, weight_decay=1e-3)
    after_step = masked_model()
    fit(after_step, (x, y), (x, y), cfg, progress=False)
    # the old way: the pruning hook recomputes weight_orig * weight_mask at every forward
    monkeypatch.setattr(loop, "masked_training", lambda model: contextlib.nullcontext(lambda: None))
    hooked = masked_model()
    fit(hooked, (x, y), (x, y), cfg, progress=False)
    for a, b in zip(prunable_layers(after_step).values(), prunable_layers(hooked).values()):
        torch.testing.assert_close(a.weight, b.weight, rtol=1e-5, atol=1e-6)
        assert torch.equal(a.weight == 0, b.weight == 0)


@pytest.mark.parametrize("steps", [1, 2, 4, 7])
def test_ramps_end_at_the_target_and_only_rise(steps):
    from deepshrink.prune import Ramp

    for ramp in Ramp:
        fr = [ramp.fraction(t, steps) for t in range(1, steps + 1)]
        assert fr[-1] == 1.0 and all(0 < a < b for a, b in zip(fr, fr[1:]))
    # the cubic ramp is ahead of the linear one before the last step, and gentler at the end
    cubic = [Ramp.CUBIC.fraction(t, steps) for t in range(1, steps + 1)]
    linear = [Ramp.LINEAR.fraction(t, steps) for t in range(1, steps + 1)]
    assert all(c > lin for c, lin in zip(cubic[:-1], linear[:-1]))
    if steps > 1:
        assert cubic[-1] - cubic[-2] < linear[-1] - linear[-2]
    assert Ramp.CUBIC.fraction(1, 4) == pytest.approx(1 - 0.75 ** 3)
