from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepshrink.coding import STREAM_CODERS, Coder, ans, decode_stream, encode_stream, fixed_bits, huffman, pack_bits, stream_size
from deepshrink.errors import ConfigError, CorruptStream

from ._strategies import skewed, symbol_streams


def test_coder_values():
    assert [c.value for c in Coder] == ["fixed", "huffman", "ans", "context"]
    assert [c.value for c in STREAM_CODERS] == ["fixed", "huffman", "ans"]
    assert Coder("ans") is Coder.ANS
    assert Coder.HUFFMAN == "huffman"


@settings(max_examples=100, deadline=None)
@given(symbol_streams(), st.sampled_from(STREAM_CODERS), st.booleans())
def test_round_trip_every_coder(stream, coder, as_str):
    syms, a = stream
    c = coder.value if as_str else coder
    data = encode_stream(syms, a, c)
    out = decode_stream(data, c, syms.size, a)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, syms)


def test_fixed_bit_width():
    assert [fixed_bits(a) for a in (1, 2, 3, 4, 5, 256, 257, 65536)] == [1, 1, 2, 2, 3, 8, 9, 16]
    syms = np.arange(5)
    assert len(encode_stream(syms, 5, Coder.FIXED)) == 2  # 5 x 3 bits
    assert len(encode_stream(syms, 5, Coder.FIXED, bits=8)) == 5
    np.testing.assert_array_equal(decode_stream(encode_stream(syms, 5, "fixed", bits=8), "fixed", 5, 5, bits=8), syms)
    assert encode_stream(np.zeros(8, dtype=np.int64), 1, "fixed") == b"\x00"


def test_bits_is_accepted_but_ignored_by_entropy_coders():
    syms = np.array([0, 1, 1, 2, 2, 2])
    for coder in (Coder.HUFFMAN, Coder.ANS):
        data = encode_stream(syms, 3, coder, bits=2)
        assert data == encode_stream(syms, 3, coder)
        np.testing.assert_array_equal(decode_stream(data, coder, 6, 3, bits=2), syms)


def test_bad_arguments():
    with pytest.raises(ConfigError):
        encode_stream(np.array([0]), 2, "zip")
    with pytest.raises(ConfigError):
        decode_stream(b"", "zip", 0, 2)
    with pytest.raises(ConfigError):
        encode_stream(np.array([0]), 5, Coder.FIXED, bits=2)  # 2 bits hold only 4 symbols
    with pytest.raises(ConfigError):
        encode_stream(np.array([0]), 5, Coder.FIXED, bits=33)
    with pytest.raises(ConfigError):
        encode_stream(np.array([5]), 5, Coder.HUFFMAN)
    with pytest.raises(ConfigError):
        decode_stream(b"", Coder.ANS, -1, 5)


def test_fixed_decode_rejects_symbols_beyond_alphabet():
    data = pack_bits(np.array([0, 4, 7]), 3)
    np.testing.assert_array_equal(decode_stream(data, Coder.FIXED, 3, 8), [0, 4, 7])
    with pytest.raises(CorruptStream):
        decode_stream(data, Coder.FIXED, 3, 5)


@pytest.mark.parametrize("coder", STREAM_CODERS)
def test_truncated_streams_raise(coder):
    syms = np.random.default_rng(2).integers(0, 20, size=200)
    data = encode_stream(syms, 20, coder)
    for cut in range(len(data)):
        with pytest.raises(CorruptStream):
            decode_stream(data[:cut], coder, syms.size, 20)


@pytest.mark.parametrize("codec", [huffman, ans], ids=["huffman", "ans"])
@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=64), count=st.integers(0, 600), a=st.integers(1, 300))
def test_random_garbage_raises_corrupt_stream_or_decodes_validly(codec, data, count, a):
    try:
        out = codec.decode(data, count, a)
    except CorruptStream:
        return
    assert out.shape == (count,)
    assert out.size == 0 or (out.min() >= 0 and out.max() < a)


@pytest.mark.parametrize("codec", [huffman, ans], ids=["huffman", "ans"])
@settings(max_examples=60, deadline=None)
@given(pos_seed=st.integers(0, 10**6), bit=st.integers(0, 7))
def test_bit_flips_raise_or_decode_in_range(codec, pos_seed, bit):
    syms = skewed(300, 12, 0.7, seed=5)
    data = codec.encode(syms, 12)
    bad = bytearray(data)
    bad[pos_seed % len(data)] ^= 1 << bit
    try:
        out = codec.decode(bytes(bad), syms.size, 12)
    except CorruptStream:
        return
    assert out.shape == syms.shape
    assert out.min() >= 0 and out.max() < 12


@settings(max_examples=150, deadline=None)
@given(symbol_streams(), st.sampled_from(STREAM_CODERS))
def test_stream_size_from_the_histogram(stream, coder):
    """Exact for fixed and Huffman codes; within a few bytes for ANS."""
    syms, a = stream
    real = len(encode_stream(syms, a, coder))
    predicted = stream_size(np.bincount(syms, minlength=a), coder)
    if coder is Coder.ANS:
        assert abs(predicted - real) <= 4
    else:
        assert predicted == real


def test_stream_size_of_long_skewed_streams():
    for a, ratio in ((33, 0.8), (1024, 0.99), (2, 0.1)):
        syms = skewed(300_000, a, ratio, seed=a)
        counts = np.bincount(syms, minlength=a)
        assert stream_size(counts, Coder.HUFFMAN) == len(encode_stream(syms, a, Coder.HUFFMAN))
        assert abs(stream_size(counts, Coder.ANS) - len(encode_stream(syms, a, Coder.ANS))) <= 4
        assert stream_size(counts, Coder.FIXED, bits=12) == len(encode_stream(syms, a, Coder.FIXED, bits=12))
    with pytest.raises(ConfigError):
        stream_size(np.array([1.0, 2.0]), Coder.HUFFMAN)
    with pytest.raises(ConfigError):
        stream_size(np.array([1, 2, 3]), Coder.FIXED, bits=1)
