from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepshrink.coding import fixed
from deepshrink.coding.fixed import pack_bits, unpack_bits
from deepshrink.errors import ConfigError, CorruptStream


@st.composite
def packed_inputs(draw):
    bits = draw(st.integers(1, 32))
    values = draw(st.lists(st.integers(0, 2**bits - 1), max_size=300))
    return np.array(values, dtype=np.int64), bits


@settings(max_examples=100, deadline=None)
@given(packed_inputs())
def test_round_trip_and_exact_size(inp):
    syms, bits = inp
    data = pack_bits(syms, bits)
    assert len(data) == (syms.size * bits + 7) // 8
    out = unpack_bits(data, bits, syms.size)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, syms)


def test_msb_first_layout():
    # 01 00 11 + 2 zero padding bits
    assert pack_bits(np.array([1, 0, 3]), 2) == bytes([0b01001100])
    assert pack_bits(np.array([0xABCDEF12]), 32) == bytes([0xAB, 0xCD, 0xEF, 0x12])
    assert pack_bits(np.array([1, 1, 1, 1, 1, 1, 1, 1, 1]), 1) == bytes([0xFF, 0x80])
    assert pack_bits(np.array([], dtype=np.int64), 7) == b""


def test_accepts_unsigned_and_small_dtypes():
    syms = np.array([0, 255, 17], dtype=np.uint8)
    np.testing.assert_array_equal(unpack_bits(pack_bits(syms, 8), 8, 3), syms)
    syms32 = np.array([2**32 - 1, 0], dtype=np.uint32)
    np.testing.assert_array_equal(unpack_bits(pack_bits(syms32, 32), 32, 2), syms32)


def test_chunked_path_round_trips(monkeypatch):
    monkeypatch.setattr(fixed, "_CHUNK", 16)
    rng = np.random.default_rng(1)
    for bits in (1, 3, 13, 32):
        for n in (15, 16, 17, 100):
            syms = rng.integers(0, 2**bits, size=n, dtype=np.int64)
            data = pack_bits(syms, bits)
            assert len(data) == (n * bits + 7) // 8
            np.testing.assert_array_equal(unpack_bits(data, bits, n), syms)


@pytest.mark.parametrize("bits", [0, 33, -1])
def test_bits_out_of_range(bits):
    with pytest.raises(ConfigError):
        pack_bits(np.array([0]), bits)
    with pytest.raises(ConfigError):
        unpack_bits(b"\x00", bits, 1)


@pytest.mark.parametrize("bad", [[4], [-1], [0, 1, 2, 3, 8]])
def test_symbol_out_of_range(bad):
    with pytest.raises(ConfigError):
        pack_bits(np.array(bad), 2)


def test_rejects_non_integer_and_2d_symbols():
    with pytest.raises(ConfigError):
        pack_bits(np.array([0.5]), 4)
    with pytest.raises(ConfigError):
        pack_bits(np.zeros((2, 2), dtype=np.int64), 4)
    with pytest.raises(ConfigError):
        unpack_bits(b"", 4, -1)


def test_truncated_and_overlong_data_raise():
    data = pack_bits(np.arange(10), 4)  # 5 bytes
    for cut in range(len(data)):
        with pytest.raises(CorruptStream):
            unpack_bits(data[:cut], 4, 10)
    with pytest.raises(CorruptStream):
        unpack_bits(data + b"\x00", 4, 10)
    with pytest.raises(CorruptStream):
        unpack_bits(b"\x00", 4, 0)


def test_nonzero_padding_raises():
    data = pack_bits(np.array([1, 2, 3]), 3)  # 9 bits -> 7 padding bits
    with pytest.raises(CorruptStream):
        unpack_bits(data[:-1] + bytes([data[-1] | 1]), 3, 3)


def test_huge_count_fails_before_allocating():
    with pytest.raises(CorruptStream):
        unpack_bits(b"\x00" * 4, 32, 10**15)
