"""Thread policy: set_threads validates, honours DEEPSHRINK_THREADS, and results agree across counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.train import TrainConfig, fit
from deepshrink.util.threads import DEFAULT_THREADS, THREADS_ENV, max_threads, set_threads


def test_explicit_env_and_default(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert set_threads(1) == 1 and torch.get_num_threads() == 1
    assert set_threads(None) == DEFAULT_THREADS == torch.get_num_threads()
    monkeypatch.setenv(THREADS_ENV, str(max_threads()))
    assert set_threads(None) == max_threads() == torch.get_num_threads()
    assert set_threads(1) == 1  # an explicit count wins over the environment


@pytest.mark.parametrize("bad", [0, -1, 10**6, 1.5, "2", True])
def test_bad_counts_are_config_errors(bad):
    with pytest.raises(ConfigError, match=r"threads must be an integer in 1\.\."):
        set_threads(bad)


@pytest.mark.parametrize("raw", ["zero", "0", "1e3", "99999"])
def test_bad_environment_is_named(monkeypatch, raw):
    monkeypatch.setenv(THREADS_ENV, raw)
    with pytest.raises(ConfigError, match=THREADS_ENV):
        set_threads(None)


@pytest.mark.skipif(max_threads() < 2, reason="needs two CPUs")
def test_training_agrees_across_thread_counts_to_float_rounding():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(600, 64, generator=g), torch.randint(0, 5, (600,), generator=g)
    weights = []
    for n in (1, 2):
        set_threads(n)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 5))
        fit(model, (x, y), (x[:100], y[:100]), TrainConfig(epochs=1, batch_size=100, lr=1e-3, keep_best=False),
            progress=False)
        weights.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
