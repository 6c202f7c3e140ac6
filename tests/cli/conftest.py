"""Shared helpers for the command-line tests: run a command through --json, make small .npz data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepshrink.cli import main


@pytest.fixture
def cli(capsys):
    """``cli(*argv) -> (exit code, the one JSON object printed on stdout)``."""

    def run(*argv: str) -> tuple[int, dict]:
        code = main([*argv, "--json", "--no-progress"])
        out = capsys.readouterr().out
        lines = [line for line in out.splitlines() if line.strip()]
        assert len(lines) == 1, out  # exactly one JSON object on stdout
        return code, json.loads(lines[0])

    return run


def make_npz(path: Path, classes: int = 10, n_train: int = 800, n_test: int = 200, side: int = 28,
             seed: int = 0, background: int = 60) -> Path:
    """An MNIST-like .npz: uint8 ``side``×``side`` images; class c draws a bright row at ``2c + 2``
    over noise of brightness up to ``background``, so a small network learns it in an epoch or two."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.integers(0, classes, n)
    y[:classes] = np.arange(classes)  # every class occurs in the training data
    x = (rng.random((n, side, side)) * background).astype(np.uint8)
    x[np.arange(n), (2 * y + 2) % side, :] = 255
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])
    return path


@pytest.fixture(scope="session")
def npz():
    """:func:`make_npz` as a fixture."""
    return make_npz


@pytest.fixture(scope="session")
def fast_recipe(tmp_path_factory) -> Path:
    """Prune, share and code with one epoch of retraining each: a quick but complete recipe."""
    p = tmp_path_factory.mktemp("recipe") / "fast.toml"
    p.write_text(
        'name = "fast"\n[[stages]]\nkind = "prune"\nsteps = 1\n[stages.retrain]\nepochs = 1\n'
        '[stages.layers]\n_default = { sparsity = 0.8 }\n'
        '[[stages]]\nkind = "share"\n[stages.finetune]\nepochs = 1\n[stages.layers]\n_default = { bits = 4 }\n'
        '[[stages]]\nkind = "code"\n'
    )
    return p
