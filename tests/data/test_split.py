"""The default validation split: a fraction capped by a count, split sizes, and the warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from deepshrink.data import DEFAULT_VAL_SIZE, SplitWarning, ValSplit, load_dataset
from deepshrink.errors import ConfigError


def _npz(path, n_train, n_test=10):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, 8, 8), dtype=np.uint8), y_train=np.arange(n_train) % 2,
             x_test=rng.integers(0, 256, (n_test, 8, 8), dtype=np.uint8), y_test=np.arange(n_test) % 2)
    return path


def test_default_is_ten_percent_capped_at_5000():
    assert DEFAULT_VAL_SIZE == ValSplit(fraction=0.1, max_count=5000)
    assert [DEFAULT_VAL_SIZE.count(n) for n in (2, 10, 8004, 50_000, 60_000)] == [1, 1, 800, 5000, 5000]
    assert "10%" in str(DEFAULT_VAL_SIZE) and "5,000" in str(DEFAULT_VAL_SIZE)


def test_small_data_gets_a_small_split_by_default_and_no_warning(tmp_path):
    # the case: 8,004 training samples used to lose 5,000 (62 %) to validation
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_dataset(_npz(tmp_path / "small.npz", 8004), seed=1)
    assert data.split_sizes() == {"train": 7204, "val": 800, "test": 10}
    assert data.split_warnings() == []


def test_a_split_taking_over_a_quarter_warns_and_says_so(tmp_path):
    with pytest.warns(SplitWarning) as caught:
        data = load_dataset(_npz(tmp_path / "s.npz", 100), val_size=30)
    assert data.split_sizes()["val"] == 30
    assert str(caught[0].message) == data.split_warnings()[0]
    assert "30 of 100" in data.split_warnings()[0] and "val_size" in data.split_warnings()[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_dataset(tmp_path / "s.npz", val_size=25).split_warnings() == []  # exactly a quarter is fine


def test_val_size_zero_means_no_validation_split(tmp_path):
    data = load_dataset(_npz(tmp_path / "z.npz", 50), val_size=0)
    assert data.split_sizes() == {"train": 50, "val": 0, "test": 10}
    x, y = data.tensors("val")
    assert len(x) == len(y) == 0


def test_custom_valsplit_and_its_bounds(tmp_path):
    path = _npz(tmp_path / "c.npz", 200)
    assert len(load_dataset(path, val_size=ValSplit(0.2, 15)).y_val) == 15
    with pytest.raises(ConfigError, match="ValSplit"):
        load_dataset(path, val_size="10%")
    for fraction, cap in ((0.0, 10), (1.0, 10), (0.1, 0), (0.1, 2.5)):
        with pytest.raises(ConfigError, match="ValSplit"):
            ValSplit(fraction, cap)
