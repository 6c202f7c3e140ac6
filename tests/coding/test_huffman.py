from __future__ import annotations

import heapq
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepshrink.coding import entropy_bits, huffman
from deepshrink.coding.huffman import canonical_codes, code_lengths
from deepshrink.errors import ConfigError, CorruptStream

from ._strategies import fibonacci_counts, skewed, symbol_streams


def _optimal_cost(counts: np.ndarray) -> int:
    """Reference: total bits of an optimal (unlimited) Huffman code = sum of merge weights."""
    w = [int(c) for c in counts if c > 0]
    if len(w) == 1:
        return w[0]
    heapq.heapify(w)
    cost = 0
    while len(w) > 1:
        s = heapq.heappop(w) + heapq.heappop(w)
        cost += s
        heapq.heappush(w, s)
    return cost


def _kraft(lengths: np.ndarray) -> float:
    ln = lengths[lengths > 0].astype(np.float64)
    return float(np.sum(2.0**-ln))


def _assert_prefix_free(lengths: np.ndarray, codes: np.ndarray) -> None:
    sym = np.flatnonzero(lengths)
    ln = lengths[sym].astype(np.int64)
    cd = codes[sym].astype(np.int64)
    assert np.all(cd < (1 << ln))  # every code fits its length
    li, lj = ln[:, None], ln[None, :]
    shorter = (li <= lj) & ~np.eye(sym.size, dtype=bool)
    # code i is a prefix of code j  <=>  code_j >> (l_j - l_i) == code_i
    prefix = (cd[None, :] >> np.maximum(lj - li, 0)) == cd[:, None]
    assert not np.any(shorter & prefix)


# --------------------------------------------------------------------------------------------
# code construction


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=300))
def test_code_lengths_are_optimal_and_complete(counts):
    c = np.array(counts, dtype=np.int64)
    ln = code_lengths(c)
    assert ln.dtype == np.uint8
    np.testing.assert_array_equal(ln == 0, c == 0)
    k = int((c > 0).sum())
    if k == 0:
        return
    if k == 1:
        assert int(ln.max()) == 1
        return
    assert _kraft(ln) == 1.0
    if int(ln.max()) < 16:  # the length limit did not bind: the code is optimal
        assert int(np.sum(c * ln.astype(np.int64))) == _optimal_cost(c)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 1000), min_size=2, max_size=6), st.integers(1, 4))
def test_length_limited_code_is_optimal_by_brute_force(counts, max_len):
    c = np.array(counts, dtype=np.int64)
    k = c.size
    if k > 1 << max_len:
        with pytest.raises(ConfigError):
            code_lengths(c, max_len=max_len)
        return
    ln = code_lengths(c, max_len=max_len).astype(np.int64)
    assert int(ln.max()) <= max_len and _kraft(ln) <= 1.0
    # every length vector in 1..max_len^k that satisfies Kraft
    grid = np.stack(np.meshgrid(*[np.arange(1, max_len + 1)] * k, indexing="ij"), -1).reshape(-1, k)
    feasible = grid[np.sum(2.0 ** -grid.astype(float), axis=1) <= 1.0]
    assert int(np.sum(c * ln)) == int((feasible * c).sum(axis=1).min())


@pytest.mark.parametrize("k,max_len", [(40, 16), (60, 16), (90, 16), (40, 8), (90, 7)])
def test_length_limit_on_fibonacci_counts(k, max_len):
    c = fibonacci_counts(k)
    assert int(code_lengths(c, max_len=32).max()) > max_len  # the limit really binds
    ln = code_lengths(c, max_len=max_len)
    assert int(ln.max()) <= max_len
    assert int(ln.min()) >= 1
    assert _kraft(ln) == 1.0
    # more frequent symbols never get longer codes
    assert np.all(np.diff(ln[np.argsort(c, kind="stable")].astype(int)) <= 0)
    _assert_prefix_free(ln, canonical_codes(ln))


def test_code_lengths_edge_cases():
    assert code_lengths(np.array([0, 0, 0])).tolist() == [0, 0, 0]
    assert code_lengths(np.array([0, 7, 0])).tolist() == [0, 1, 0]
    assert code_lengths(np.array([3, 3])).tolist() == [1, 1]
    assert code_lengths(np.array([], dtype=np.int64)).size == 0
    assert code_lengths(np.ones(4, dtype=np.int64), max_len=2).tolist() == [2, 2, 2, 2]
    with pytest.raises(ConfigError):
        code_lengths(np.ones(5, dtype=np.int64), max_len=2)  # 5 symbols need 3 bits
    with pytest.raises(ConfigError):
        code_lengths(np.array([1, -1]))
    with pytest.raises(ConfigError):
        code_lengths(np.array([1.0, 2.0]))
    with pytest.raises(ConfigError):
        code_lengths(np.array([1, 2]), max_len=0)


def test_canonical_codes_known_example():
    # sorted by (length, symbol): 1 -> 0, 0 -> 10, 2 -> 110, 3 -> 111; absent 4 -> 0
    codes = canonical_codes(np.array([2, 1, 3, 3, 0]))
    assert codes.dtype == np.uint32
    assert codes.tolist() == [0b10, 0b0, 0b110, 0b111, 0]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 1000), min_size=2, max_size=200))
def test_canonical_codes_are_prefix_free_and_ordered(counts):
    c = np.array(counts, dtype=np.int64)
    ln = code_lengths(c)
    codes = canonical_codes(ln)
    _assert_prefix_free(ln, codes)
    sym = np.flatnonzero(ln)
    order = sym[np.lexsort((sym, ln[sym]))]
    # left-aligned to 32 bits, canonical codes increase in (length, symbol) order
    aligned = codes[order].astype(np.int64) << (32 - ln[order].astype(np.int64))
    assert np.all(np.diff(aligned) > 0)


def test_canonical_codes_rejects_kraft_violation():
    with pytest.raises(ConfigError):
        canonical_codes(np.array([1, 1, 1]))
    with pytest.raises(ConfigError):
        canonical_codes(np.array([33, 1]))


# --------------------------------------------------------------------------------------------
# encode / decode


@settings(max_examples=100, deadline=None)
@given(symbol_streams())
def test_round_trip(stream):
    syms, a = stream
    data = huffman.encode(syms, a)
    out = huffman.decode(data, syms.size, a)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, syms)
    if syms.size == 0:
        assert data == b""
        return
    # size: entropy <= payload, and payload <= entropy + 1 bit/symbol + header (1 byte +
    # at most 5 bits per alphabet entry) + padding
    h = entropy_bits(syms, a)
    assert 8 * len(data) >= h - 1e-6
    assert 8 * len(data) <= h + syms.size + 8 + 5 * a + 7 + 1e-6


def test_round_trip_large_skewed_close_to_entropy():
    syms = skewed(200_000, 32, 0.8)
    data = huffman.encode(syms, 32)
    np.testing.assert_array_equal(huffman.decode(data, syms.size, 32), syms)
    h = entropy_bits(syms, 32)
    assert 8 * len(data) <= h * 1.02 + 200  # Huffman is ~1% above entropy here


def test_length_limited_stream_round_trips():
    c = fibonacci_counts(25)  # unlimited depth would be 24
    syms = np.repeat(np.arange(25), c)
    np.random.default_rng(0).shuffle(syms)
    assert int(code_lengths(c, max_len=32).max()) == 24
    data = huffman.encode(syms, 25)
    w = data[0] & 7
    assert 4 <= w <= 5  # longest code is 8..16 bits
    np.testing.assert_array_equal(huffman.decode(data, syms.size, 25), syms)
    assert 8 * len(data) <= entropy_bits(syms, 25) * 1.05 + 100


def test_single_symbol_and_tiny_alphabets():
    for a, syms in [(1, np.zeros(1000, dtype=np.int64)), (5, np.full(17, 3)), (2, np.array([1]))]:
        data = huffman.encode(syms, a)
        # one header byte + table + 1 bit per symbol
        assert len(data) <= 1 + (a + syms.size + 7) // 8 + 1
        np.testing.assert_array_equal(huffman.decode(data, syms.size, a), syms)
        with pytest.raises(CorruptStream):
            huffman.decode(data, syms.size + 1, a)


def test_both_table_modes_are_used_and_compact():
    smooth = skewed(5000, 256, 0.98, seed=3)  # unimodal histogram: delta-coded table
    d1 = huffman.encode(smooth, 256)
    assert d1[0] >> 6 == 1
    ln = code_lengths(np.bincount(smooth, minlength=256)).astype(np.int64)
    payload_bits = int(np.sum(ln[smooth]))
    table_bytes = len(d1) - 1 - payload_bits // 8
    assert table_bytes < 256 * 5 // 8 // 2  # well under half the fixed-width table
    np.testing.assert_array_equal(huffman.decode(d1, smooth.size, 256), smooth)

    rng = np.random.default_rng(0)
    perm = rng.permutation(16)
    rough = perm[skewed(5000, 16, 0.7, seed=4)]  # lengths jump around: fixed-width table
    d0 = huffman.encode(rough, 16)
    assert d0[0] >> 6 == 0
    np.testing.assert_array_equal(huffman.decode(d0, rough.size, 16), rough)


def test_large_alphabet_sparse_usage():
    syms = np.array([0, 65535, 40000, 0, 0, 65535])
    data = huffman.encode(syms, 65536)
    np.testing.assert_array_equal(huffman.decode(data, syms.size, 65536), syms)


def test_empty_stream():
    assert huffman.encode(np.array([], dtype=np.int64), 7) == b""
    assert huffman.decode(b"", 0, 7).size == 0
    with pytest.raises(CorruptStream):
        huffman.decode(b"\x01", 0, 7)
    with pytest.raises(CorruptStream):
        huffman.decode(b"", 1, 7)


def test_bad_arguments():
    with pytest.raises(ConfigError):
        huffman.encode(np.array([3]), 3)
    with pytest.raises(ConfigError):
        huffman.encode(np.array([-1]), 3)
    with pytest.raises(ConfigError):
        huffman.encode(np.array([0]), 0)
    with pytest.raises(ConfigError):
        huffman.encode(np.array([0]), 65537)
    with pytest.raises(ConfigError):
        huffman.decode(b"", -1, 3)
    with pytest.raises(ConfigError):
        huffman.decode(b"", 0, True)


# --------------------------------------------------------------------------------------------
# malformed input


def _small_stream() -> tuple[bytes, np.ndarray, int]:
    syms = skewed(300, 12, 0.7, seed=5)
    return huffman.encode(syms, 12), syms, 12


def test_every_truncation_raises():
    data, syms, a = _small_stream()
    for cut in range(len(data)):
        with pytest.raises(CorruptStream):
            huffman.decode(data[:cut], syms.size, a)


def test_wrong_count_and_trailing_bytes_raise():
    data, syms, a = _small_stream()
    for n in (syms.size - 1, syms.size + 1, 1):
        with pytest.raises(CorruptStream):
            huffman.decode(data, n, a)
    for extra in (b"\x00", b"\xff", b"\x00\x00\x00"):
        with pytest.raises(CorruptStream):
            huffman.decode(data + extra, syms.size, a)


def test_nonzero_padding_and_bad_header_byte_raise():
    data, syms, a = _small_stream()
    pad = (data[0] >> 3) & 7
    if pad:
        with pytest.raises(CorruptStream):
            huffman.decode(data[:-1] + bytes([data[-1] | 1]), syms.size, a)
    for head in (0b10_000_011, 0b11_000_011, data[0] & ~7, (data[0] & ~7) | 6, (data[0] & ~7) | 7):
        with pytest.raises(CorruptStream):
            huffman.decode(bytes([head]) + data[1:], syms.size, a)


def _fixed_table_payload(lengths: list[int], w: int, body_bits: str) -> bytes:
    bits = "".join(format(x, f"0{w}b") for x in lengths) + body_bits
    pad = -len(bits) % 8
    bits += "0" * pad
    body = int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""
    return bytes([(0 << 6) | (pad << 3) | w]) + body


def test_hand_made_payload_and_invalid_tables():
    # lengths [1, 2, 2]: codes 0 -> 0, 1 -> 10, 2 -> 11; symbols 2 0 1
    ok = _fixed_table_payload([1, 2, 2], 2, "11" "0" "10")
    assert huffman.decode(ok, 3, 3).tolist() == [2, 0, 1]
    for lengths in ([1, 1, 1], [1, 2, 0], [2, 2, 0], [0, 0, 0], [2, 0, 0]):
        with pytest.raises(CorruptStream):
            huffman.decode(_fixed_table_payload(lengths, 2, "0000"), 2, 3)
    # width 3 although the longest code is 2 bits
    with pytest.raises(CorruptStream):
        huffman.decode(_fixed_table_payload([1, 2, 2], 3, "11010"), 3, 3)
    # lengths above 16
    with pytest.raises(CorruptStream):
        huffman.decode(_fixed_table_payload([17, 1, 2], 5, "0" * 40), 3, 3)
    # a single symbol: the unused code word '1' is invalid
    with pytest.raises(CorruptStream):
        huffman.decode(_fixed_table_payload([0, 1, 0], 1, "001"), 3, 3)


def test_count_larger_than_possible_fails_fast_without_allocating():
    data, syms, a = _small_stream()
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        for n in (10**12, 8 * len(data) + 1):
            with pytest.raises(CorruptStream):
                huffman.decode(data, n, a)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 1.0
    assert peak < 1 << 20


def test_chunked_encode_and_decode_match_single_pass(monkeypatch):
    from deepshrink.coding import _util

    streams = [skewed(3000, 32, 0.8, seed=7), skewed(2000, 256, 0.98, seed=8), np.arange(64).repeat(20)]
    whole = [huffman.encode(s, int(s.max()) + 1) for s in streams]
    monkeypatch.setattr(huffman, "PACK_CHUNK", 7)
    monkeypatch.setattr(_util, "DECODE_CHUNK_BITS", 64)
    monkeypatch.setattr(_util, "FAST", None)  # the chunked numpy decoder, not the compiled one
    for s, ref in zip(streams, whole):
        a = int(s.max()) + 1
        data = huffman.encode(s, a)
        assert data == ref
        np.testing.assert_array_equal(huffman.decode(data, s.size, a), s)
        with pytest.raises(CorruptStream):
            huffman.decode(data[:-1], s.size, a)
        with pytest.raises(CorruptStream):
            huffman.decode(data, s.size + 1, a)
        with pytest.raises(CorruptStream):
            huffman.decode(data, s.size - 1, a)
