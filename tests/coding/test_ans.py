from __future__ import annotations

import constriction
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepshrink.coding import ans, entropy_bits
from deepshrink.coding.ans import precision_bits, quantize_frequencies
from deepshrink.errors import ConfigError, CorruptStream

from ._strategies import skewed, symbol_streams


@settings(max_examples=100, deadline=None)
@given(symbol_streams())
def test_round_trip(stream):
    syms, a = stream
    data = ans.encode(syms, a)
    out = ans.decode(data, syms.size, a)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, syms)
    if syms.size == 0:
        assert data == b""
        return
    # exact model for short streams: within a few words of entropy, plus <= 3 bytes per
    # model token (one per present symbol or run of absent ones)
    k = int(np.count_nonzero(np.bincount(syms, minlength=a)))
    assert len(data) <= entropy_bits(syms, a) / 8 + 3 * (2 * k + 1) + 12


@settings(max_examples=50, deadline=None)
@given(symbol_streams(max_alphabet=40, max_len=40_000))
def test_round_trip_quantised_model(stream):
    # long streams use the quantised 2**14 model
    syms, a = stream
    np.testing.assert_array_equal(ans.decode(ans.encode(syms, a), syms.size, a), syms)


def test_within_one_percent_of_entropy_on_100k_skewed_symbols():
    syms = skewed(100_000, 32, 0.8)
    data = ans.encode(syms, 32)
    np.testing.assert_array_equal(ans.decode(data, syms.size, 32), syms)
    h = entropy_bits(syms, 32) / 8
    header = 3 * 32
    assert len(data) <= 1.01 * h + header
    assert len(data) >= h  # no free lunch


def test_single_symbol_needs_no_words():
    for a, sym, n in [(1, 0, 1), (1, 0, 100_000), (7, 6, 5), (300, 0, 20_000)]:
        syms = np.full(n, sym, dtype=np.int64)
        data = ans.encode(syms, a)
        assert len(data) <= 6  # model only
        np.testing.assert_array_equal(ans.decode(data, n, a), syms)
        if n <= 1 << 14:  # exact counts: a wrong count breaks the model sum
            with pytest.raises(CorruptStream):
                ans.decode(data, n + 1, a)
        with pytest.raises(CorruptStream):
            ans.decode(data + b"\x01", n, a)


def test_trailing_zeros_are_coded_and_wrong_counts_detected():
    syms = np.array([3, 1, 2] + [0] * 50, dtype=np.int64)
    for reps in (1, 400):  # exact model, quantised model
        s = np.tile(syms, reps)
        data = ans.encode(s, 4)
        np.testing.assert_array_equal(ans.decode(data, s.size, 4), s)
        for n in (s.size - 1, s.size + 1, s.size + 10):
            with pytest.raises(CorruptStream):
                ans.decode(data, n, 4)


def test_large_alphabet_all_symbols_present():
    rng = np.random.default_rng(0)
    a = 65536
    syms = np.concatenate([np.arange(a), rng.integers(0, 16, size=300_000)])
    rng.shuffle(syms)
    assert precision_bits(a) == 18
    data = ans.encode(syms, a)
    np.testing.assert_array_equal(ans.decode(data, syms.size, a), syms)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=300), st.sampled_from([8, 14, 18]))
def test_quantize_frequencies(counts, precision):
    c = np.array(counts, dtype=np.int64)
    if not c.any():
        with pytest.raises(ConfigError):
            quantize_frequencies(c, precision)
        return
    f = quantize_frequencies(c, precision)
    if int((c > 0).sum()) > 1 << precision:
        return
    assert int(f.sum()) == 1 << precision
    np.testing.assert_array_equal(f > 0, c > 0)
    # the quantised model costs little over the empirical entropy when counts are large
    p = c[c > 0] / c.sum()
    q = f[c > 0] / f.sum()
    kl = float(np.sum(p * np.log2(p / q)))
    assert kl < 0.05 + (c > 0).sum() / 2**precision * 2


def test_quantize_frequencies_limits():
    assert quantize_frequencies(np.ones(1 << 14, dtype=np.int64)).tolist() == [1] * (1 << 14)
    with pytest.raises(ConfigError):
        quantize_frequencies(np.ones((1 << 14) + 1, dtype=np.int64))
    rare = np.array([10**12] + [1] * 5000, dtype=np.int64)
    f = quantize_frequencies(rare)
    assert f.sum() == 1 << 14 and f.min() == 1 and f[0] == (1 << 14) - 5000


def test_empty_stream_and_bad_arguments():
    assert ans.encode(np.array([], dtype=np.int64), 5) == b""
    assert ans.decode(b"", 0, 5).size == 0
    with pytest.raises(CorruptStream):
        ans.decode(b"\x02", 0, 5)
    with pytest.raises(CorruptStream):
        ans.decode(b"", 3, 5)
    with pytest.raises(ConfigError):
        ans.encode(np.array([5]), 5)
    with pytest.raises(ConfigError):
        ans.encode(np.array([0]), 0)
    with pytest.raises(ConfigError):
        ans.decode(b"", -2, 5)


# --------------------------------------------------------------------------------------------
# malformed input


def _small_stream() -> tuple[bytes, np.ndarray, int]:
    syms = skewed(300, 12, 0.7, seed=5)
    return ans.encode(syms, 12), syms, 12


def test_every_truncation_raises():
    data, syms, a = _small_stream()
    for cut in range(len(data)):
        with pytest.raises(CorruptStream):
            ans.decode(data[:cut], syms.size, a)


def test_wrong_count_and_trailing_bytes_raise():
    data, syms, a = _small_stream()
    for n in (syms.size - 1, syms.size + 1, 1, 10**6):
        with pytest.raises(CorruptStream):
            ans.decode(data, n, a)
    for extra in (b"\x00", b"\x01", b"\xff\xff\xff\x7f"):
        with pytest.raises(CorruptStream):
            ans.decode(data + extra, syms.size, a)


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def test_hand_made_models():
    # 3 symbols with counts 2, 0, 1 (n = 3): tokens 4, run-of-1 = 1, 2
    good = ans.encode(np.array([0, 2, 0]), 3)
    assert good[:3] == bytes([4, 1, 2])
    np.testing.assert_array_equal(ans.decode(good, 3, 3), [0, 2, 0])
    words = good[3:]
    bad_models = [
        bytes([4, 1, 4]),  # sums to 4, not 3
        bytes([4, 3]),  # run of 2 absent symbols: symbol 2 has frequency 0
        bytes([4, 0, 2]),  # zero-frequency token
        bytes([4, 5]),  # covers 4 symbols
        bytes([0x84, 0x00, 1, 2]),  # non-minimal varint
        bytes([0x80, 0x80, 0x80, 0x04]),  # over-long varint
        bytes([4, 1]),  # model ends early
    ]
    for model in bad_models:
        with pytest.raises(CorruptStream):
            ans.decode(model + words, 3, 3)
    # zero byte at the end of the words
    with pytest.raises(CorruptStream):
        ans.decode(good + b"\x00", 3, 3)


def test_symbol_absent_from_model_raises():
    # Code symbol 1 with a model in which it has frequency 0 (constriction gives it a tiny
    # probability anyway), then hand the result to the decoder.
    freqs = np.array([3, 0, 1], dtype=np.int64)
    probs = np.concatenate([[0.0], freqs / 4])
    model = constriction.stream.model.Categorical(probs, perfect=False)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(np.array([1, 2, 1, 3], dtype=np.int32), model)  # message 0 1 0 2
    words = coder.get_compressed().astype("<u4").tobytes().rstrip(b"\x00")
    header = _varint(3 << 1) + _varint(1) + _varint(1 << 1)
    with pytest.raises(CorruptStream):
        ans.decode(header + words, 4, 3)
