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
            progress=False, teacher_logits=teacher_logits)
        with torch.no_grad():
            agree[a] = float((model(x).argmax(1) == teacher_logits.argmax(1)).float().mean())
    assert agree[1.0] > agree[0.0] + 0.2
    with pytest.raises(ConfigError, match="teacher_logits"):
        fit(nn.Linear(10, 2), (x, y), (x, y), TrainConfig(epochs=1, distill=0.5), progress=False)


@pytest.mark.parametrize("bad", [dict(epochs=-1), dict(lr=0), dict(batch_size=0), dict(optimizer="lbfgs"),
                                 dict(schedule="step"), dict(distill=1.5), dict(temperature=0)])
def test_train_config_validation(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad)
