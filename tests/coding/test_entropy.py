from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings

from deepshrink.coding import entropy_bits, histogram
from deepshrink.errors import ConfigError

from ._strategies import symbol_streams


def test_known_values():
    assert entropy_bits(np.array([0, 1, 2, 3] * 2), 4) == pytest.approx(16.0)
    assert entropy_bits(np.array([0, 0, 0, 1]), 2) == pytest.approx(4 * (0.75 * math.log2(4 / 3) + 0.25 * 2))
    assert entropy_bits(np.full(1000, 5), 6) == 0.0
    assert entropy_bits(np.array([], dtype=np.int64), 3) == 0.0


@settings(max_examples=100, deadline=None)
@given(symbol_streams())
def test_matches_definition_and_bounds(stream):
    syms, a = stream
    h = entropy_bits(syms, a)
    counts = histogram(syms, a)
    assert counts.dtype == np.int64 and counts.shape == (a,)
    assert int(counts.sum()) == syms.size
    np.testing.assert_array_equal(counts, np.bincount(syms, minlength=a))
    assert 0.0 <= h <= syms.size * math.log2(max(a, 1)) + 1e-6
    p = counts[counts > 0] / max(syms.size, 1)
    assert h == pytest.approx(-syms.size * float(np.sum(p * np.log2(p))), abs=1e-6)


def test_histogram_validates_symbols():
    with pytest.raises(ConfigError):
        histogram(np.array([0, 3]), 3)
    with pytest.raises(ConfigError):
        histogram(np.array([-1]), 3)
    with pytest.raises(ConfigError):
        histogram(np.array([0.0, 1.0]), 3)
    with pytest.raises(ConfigError):
        entropy_bits(np.array([1]), 0)
    assert histogram(np.array([], dtype=np.int64), 3).tolist() == [0, 0, 0]
    assert histogram([], 2).tolist() == [0, 0]
