import pytest
import torch
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.train import TrainConfig, evaluate, fit


def _toy(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 10, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return x, y


def test_fit_learns_and_keeps_the_best_validation_epoch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 2))
    x, y = _toy()
    hist = fit(model, (x[:400], y[:400]), (x[400:], y[400:]), TrainConfig(epochs=5, lr=1e-2, batch_size=16), progress=False)
    assert len(hist.val_accuracy) == 5 and hist.best_val_accuracy == max(hist.val_accuracy)
    assert evaluate(model, (x[400:], y[400:])) == pytest.approx(hist.best_val_accuracy)
    assert hist.best_val_accuracy > 0.85


def test_fit_is_deterministic_for_a_seed():
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = nn.Linear(10, 2)
        x, y = _toy()
        fit(model, (x, y), (x, y), TrainConfig(epochs=2, seed=7), progress=False)
        outs.append(model.weight.detach().clone())
    assert torch.equal(outs[0], outs[1])


def test_distillation_pulls_the_student_towards_the_teacher():
    x, y = _toy()
    # a teacher that disagrees with the labels: it separates the classes along another direction
    teacher_logits = torch.stack([-3 * x[:, 2], 3 * x[:, 2]], dim=1)
    agree = {}
    for a in (0.0, 1.0):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2))
        fit(model, (x, y), (x, y), TrainConfig(epochs=20, lr=1e-2, batch_size=32, distill=a, keep_best=False),
            progress=False, teacher=teacher_logits)
        with torch.no_grad():
            agree[a] = float((model(x).argmax(1) == teacher_logits.argmax(1)).float().mean())
    assert agree[1.0] > agree[0.0] + 0.2
    with pytest.raises(ConfigError, match="teacher"):
        fit(nn.Linear(10, 2), (x, y), (x, y), TrainConfig(epochs=1, distill=0.5), progress=False)


@pytest.mark.parametrize("bad", [dict(epochs=-1), dict(lr=0), dict(batch_size=0), dict(optimizer="lbfgs"),
                                 dict(schedule="step"), dict(distill=1.5), dict(temperature=0)])
def test_train_config_validation(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad)


def test_without_validation_data_the_last_epoch_is_kept():
    torch.manual_seed(0)
    model = nn.Linear(10, 2)
    x, y = _toy()
    empty = (x[:0], y[:0])
    hist = fit(model, (x, y), empty, TrainConfig(epochs=3, lr=1e-2, keep_best=True), progress=False)
    assert hist.best_epoch == 2 and len(hist.train_loss) == 3
    assert all(a != a for a in hist.val_accuracy)  # NaN: nothing was measured
    torch.manual_seed(0)
    last = nn.Linear(10, 2)
    fit(last, (x, y), empty, TrainConfig(epochs=3, lr=1e-2, keep_best=False), progress=False)
    assert torch.equal(model.weight, last.weight)


def test_masks_are_applied_after_the_step_not_by_a_hook_at_every_forward():
    import torch.nn.utils.prune as tprune

    from deepshrink.prune import apply_mask, magnitude_mask

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 2))
    mask = magnitude_mask(model[0].weight, sparsity=0.6)
    apply_mask(model[0], mask)
    seen = []
    model[0].register_forward_hook(
        lambda m, i, o: seen.append((m.weight is m.weight_orig, float(m.weight.detach()[mask == 0].abs().sum()))))
    x, y = _toy()
    fit(model, (x, y), (x[:50], y[:50]), TrainConfig(epochs=2, lr=1e-2, batch_size=64), progress=False)
    assert seen and all(direct and zeros == 0.0 for direct, zeros in seen)  # the parameter itself, exactly zero
    assert tprune.is_pruned(model[0])  # the hook is back afterwards
    assert torch.all(model[0].weight_orig[mask == 0] == 0) and torch.all(model[0].weight[mask == 0] == 0)
