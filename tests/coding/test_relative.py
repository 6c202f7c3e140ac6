from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepshrink.coding import decode_positions, encode_positions
from deepshrink.errors import ConfigError, CorruptStream


@st.composite
def sparse_positions(draw):
    numel = draw(st.integers(0, 3000))
    gap_bits = draw(st.integers(1, 16))
    density = draw(st.sampled_from([0.0, 0.001, 0.01, 0.1, 0.5, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pos = np.flatnonzero(rng.random(numel) < density).astype(np.int64)
    return pos, numel, gap_bits


def test_han_et_al_style_example():
    # gap_bits = 3: gaps up to 7; a filler advances 8 positions
    pos = np.array([1, 4, 15, 16, 40])
    gaps, filler = encode_positions(pos, 41, 3)
    # 1: gap 1 | 4: gap 2 | 15: gap 10 -> filler(7) at 12, entry gap 2
    # 16: gap 0 | 40: gap 23 -> fillers at 24 and 32, entry gap 7
    assert gaps.tolist() == [1, 2, 7, 2, 0, 7, 7, 7]
    assert filler.tolist() == [False, False, True, False, False, True, True, False]
    assert decode_positions(gaps, 41).tolist() == [1, 4, 12, 15, 16, 24, 32, 40]


@settings(max_examples=100, deadline=None)
@given(sparse_positions())
def test_round_trip_and_fillers_exactly_when_gaps_overflow(inp):
    pos, numel, b = inp
    gaps, filler = encode_positions(pos, numel, b)
    assert gaps.dtype == np.int64 and filler.dtype == bool
    assert gaps.shape == filler.shape
    assert np.all((gaps >= 0) & (gaps <= (1 << b) - 1))
    assert np.all(gaps[filler] == (1 << b) - 1)
    real_gap = np.diff(pos, prepend=-1) - 1
    assert int(filler.sum()) == int(np.sum(real_gap // (1 << b)))
    assert int((~filler).sum()) == pos.size
    all_pos = decode_positions(gaps, numel)
    np.testing.assert_array_equal(all_pos[~filler], pos)
    assert not np.isin(all_pos[filler], pos).any()  # fillers sit on zeros


def test_gap_bits_one_extreme():
    # gap_bits = 1: gaps 0 or 1; every further 2 zeros cost a filler
    gaps, filler = encode_positions(np.array([9]), 10, 1)
    assert gaps.tolist() == [1, 1, 1, 1, 1]
    assert filler.tolist() == [True, True, True, True, False]
    assert decode_positions(gaps, 10).tolist() == [1, 3, 5, 7, 9]
    gaps, filler = encode_positions(np.array([0, 2, 3]), 4, 1)
    assert gaps.tolist() == [0, 1, 0] and not filler.any()


def test_empty_and_dense():
    gaps, filler = encode_positions(np.array([], dtype=np.int64), 100, 4)
    assert gaps.size == 0 and filler.size == 0
    assert decode_positions(gaps, 100).size == 0
    gaps, filler = encode_positions(np.array([], dtype=np.int64), 0, 4)
    assert gaps.size == 0
    gaps, filler = encode_positions(np.arange(1000), 1000, 2)
    assert not gaps.any() and not filler.any()
    np.testing.assert_array_equal(decode_positions(gaps, 1000), np.arange(1000))


def test_exact_overflow_boundary():
    b = 4
    # real gap 15 fits, 16 needs one filler, 31 one filler, 32 two fillers
    for gap, n_fill in [(15, 0), (16, 1), (31, 1), (32, 2)]:
        gaps, filler = encode_positions(np.array([gap]), gap + 1, b)
        assert int(filler.sum()) == n_fill
        assert decode_positions(gaps, gap + 1)[-1] == gap


@pytest.mark.parametrize(
    "pos,numel,b",
    [
        ([3, 3], 10, 4),  # duplicate
        ([5, 2], 10, 4),  # decreasing
        ([-1, 2], 10, 4),
        ([0, 10], 10, 4),
        ([0], 0, 4),
        ([0], 10, 0),
        ([0], 10, 17),
        ([0], -1, 4),
        ([0.5], 10, 4),
    ],
)
def test_encode_rejects_bad_input(pos, numel, b):
    with pytest.raises(ConfigError):
        encode_positions(np.array(pos), numel, b)


def test_decode_rejects_positions_beyond_numel():
    with pytest.raises(CorruptStream):
        decode_positions(np.array([3, 3]), 7)  # positions 3, 7
    with pytest.raises(CorruptStream):
        decode_positions(np.array([0]), 0)
    with pytest.raises(CorruptStream):
        decode_positions(np.array([1, -1]), 10)
    with pytest.raises(CorruptStream):
        decode_positions(np.full(10, 2**62), 10**6)  # would overflow a naive cumsum
    assert decode_positions(np.array([3, 2]), 7).tolist() == [3, 6]
