"""The compiled decoders (deepshrink.coding._fastcode) against the numpy/constriction reference.

Every case runs each decoder twice, once compiled and once with ``_util.FAST = None``, and
requires the same symbols or the same exception type and message, on valid streams and on
truncated, corrupted and random data.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepshrink.coding import _util, ans, huffman
from deepshrink.errors import CorruptStream

from ._strategies import fibonacci_counts, skewed, symbol_streams

pytestmark = pytest.mark.skipif(_util.FAST is None, reason="the C extension deepshrink.coding._fastcode is not built")


def _run(fn, *args):
    try:
        return ("ok", fn(*args))
    except CorruptStream as exc:
        return ("error", str(exc))


def _both(fn, *args):
    """(compiled outcome, reference outcome) of ``fn(*args)``; an outcome is ("ok", result) or
    ("error", message) for a CorruptStream."""
    fast = _util.FAST
    try:
        compiled = _run(fn, *args)
        _util.FAST = None
        reference = _run(fn, *args)
    finally:
        _util.FAST = fast
    return compiled, reference


def _assert_same(fn, *args):
    compiled, reference = _both(fn, *args)
    assert compiled[0] == reference[0], (compiled, reference)
    if compiled[0] == "error":
        assert compiled[1] == reference[1]
    else:
        for c, r in zip(compiled[1] if isinstance(compiled[1], tuple) else (compiled[1],),
                        reference[1] if isinstance(reference[1], tuple) else (reference[1],)):
            np.testing.assert_array_equal(c, r)
    return compiled


@st.composite
def corruptions(draw, data: bytes):
    """``data`` truncated, with bytes flipped, overwritten or appended, or replaced by noise."""
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "append", "noise"]))
    b = bytearray(data)
    if kind == "truncate" and b:
        return bytes(b[: draw(st.integers(0, len(b) - 1))])
    if kind == "flip" and b:
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(b)
    if kind == "overwrite" and b:
        i = draw(st.integers(0, len(b) - 1))
        return bytes(b[:i]) + draw(st.binary(min_size=1, max_size=8)) + bytes(b[i + 1 :])
    if kind == "append":
        return bytes(b) + draw(st.binary(min_size=1, max_size=8))
    return draw(st.binary(min_size=0, max_size=64))


# --------------------------------------------------------------------------------------------
# Both decoders against their fallbacks, then Huffman


@pytest.mark.parametrize("coder", [huffman, ans], ids=["huffman", "ans"])
@settings(max_examples=150, deadline=None)
@given(stream=symbol_streams())
def test_valid_streams_decode_identically(coder, stream):
    syms, a = stream
    data = coder.encode(syms, a)
    status, out = _assert_same(coder.decode, data, syms.size, a)
    assert status == "ok"
    np.testing.assert_array_equal(out, syms)


@pytest.mark.parametrize("coder", [huffman, ans], ids=["huffman", "ans"])
@settings(max_examples=300, deadline=None)
@given(stream=symbol_streams(max_alphabet=40, max_len=300), data=st.data())
def test_corrupt_streams_fail_identically(coder, stream, data):
    syms, a = stream
    bad = data.draw(corruptions(coder.encode(syms, a)))
    count = data.draw(st.sampled_from([syms.size, syms.size + 1, max(0, syms.size - 1), 1, 7]))
    _assert_same(coder.decode, bad, count, a)


def test_huffman_length_limited_and_large_alphabets():
    c = fibonacci_counts(30)  # codes up to the 16-bit limit
    syms = np.repeat(np.arange(30), c)
    np.random.default_rng(1).shuffle(syms)
    big = skewed(50_000, 65536, 0.9999, seed=2)
    for s, a in ((syms, 30), (big, 65536), (skewed(300_000, 33, 0.8), 33)):
        data = huffman.encode(s, a)
        assert _assert_same(huffman.decode, data, s.size, a)[0] == "ok"
        for cut in (1, len(data) // 2, len(data) - 1):
            assert _assert_same(huffman.decode, data[:cut], s.size, a)[0] == "error"


def test_prefix_decode_reads_nothing_past_its_buffer():
    """Bits past the end of the buffer read as zero; the stop bound is enforced per code word."""
    sym = np.array([0, 1, 2, 3], dtype=np.int32)
    lens = np.array([2, 2, 2, 2], dtype=np.uint8)
    out = np.empty(4, dtype=np.int64)
    status, end = _util.FAST.prefix_decode(b"\xe4", 0, 8, 4, sym, lens, 2, out)
    assert (status, end, out.tolist()) == (0, 8, [3, 2, 1, 0])
    status, end = _util.FAST.prefix_decode(b"\xe4", 0, 7, 4, sym, lens, 2, out)
    assert (status, end) == (2, 6)  # the 4th code word would cross bit 7


@pytest.mark.parametrize(
    "args",
    [
        (b"\x00", 0, 9, 1, np.zeros(2, np.int32), np.ones(2, np.uint8), 1),  # stop past the buffer
        (b"\x00", 0, 8, 1, np.zeros(2, np.int32), np.ones(2, np.uint8), 25),  # width too large
        (b"\x00", 0, 8, 1, np.zeros(1, np.int32), np.ones(2, np.uint8), 1),  # table too short
        (b"\x00", 0, 8, 9, np.zeros(2, np.int32), np.ones(2, np.uint8), 1),  # out too short
        (b"\x00", 0, 8, 1, np.full(2, -1, np.int32), np.ones(2, np.uint8), 1),  # negative symbol
        (b"\x00", 0, 8, 1, np.zeros(2, np.int32), np.full(2, 2, np.uint8), 1),  # length > width
        (b"\x00", 0, 8, 2**61, np.zeros(2, np.int32), np.ones(2, np.uint8), 1),  # out far too short
    ],
)
def test_prefix_decode_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        _util.FAST.prefix_decode(*args, np.empty(8, dtype=np.int64))


# --------------------------------------------------------------------------------------------
# ANS




@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3000), st.integers(0, 2**32 - 1), st.integers(0, 12), st.integers(1, 500))
def test_ans_any_words_decode_like_constriction(alphabet, seed, n_words, count):
    """The compiled coder rebuilds constriction's fixed-point model exactly: from arbitrary
    states (random words) it decodes the same symbols and ends in the same state."""
    rng = np.random.default_rng(seed)
    freqs = rng.integers(0, 50, alphabet) * (rng.random(alphabet) < rng.random())
    freqs[rng.integers(0, alphabet)] += 1
    if rng.random() < 0.5:  # a quantised model summing to 2**P, as for long streams
        freqs = ans.quantize_frequencies(freqs, ans.precision_bits(alphabet))
    words = rng.integers(0, 2**32, n_words, dtype=np.uint64).astype("<u4")
    if n_words:
        words[-1] |= 1  # constriction refuses a zero last word; ans.decode never passes one
    _assert_same(ans._decode_words, words.tobytes(), freqs.astype(np.int64), int(freqs.sum()), count)


def test_ans_large_alphabet_and_quantised_models():
    for syms, a in ((skewed(100_000, 65536, 0.9995, seed=3), 65536), (skewed(400_000, 33, 0.8, seed=4), 33),
                    (np.arange(5000) % 4097, 4097)):
        data = ans.encode(syms, a)
        assert _assert_same(ans.decode, data, syms.size, a)[0] == "ok"
        for cut in (1, len(data) // 2, len(data) - 1):
            _assert_same(ans.decode, data[:cut], syms.size, a)


@pytest.mark.parametrize(
    "args",
    [
        (b"\x01\x00\x00", np.array([0.0, 1.0]), 1),  # words not a multiple of 4 bytes
        (b"\x01\x00\x00\x00", np.array([0.0, 1.0]), 2),  # out too short
        (b"\x01\x00\x00\x00", np.array([0.0, 1.0]), -1),  # negative count
        (b"\x01\x00\x00\x00", np.array([0.0, 1.0]), 2**61),  # out far too short
    ],
)
def test_ans_decode_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        _util.FAST.ans_decode(*args, np.empty(1, dtype=np.int64))


def test_ans_decode_refuses_unnormalisable_models():
    out = np.empty(1, dtype=np.int64)
    for probs in (np.zeros(3), np.array([0.0, np.inf]), np.array([0.0, np.nan]), np.array([1.0])):
        assert _util.FAST.ans_decode(b"\x01\x00\x00\x00", probs, 1, out)[0] == 4
    assert _util.FAST.ans_decode(b"\x00\x00\x00\x00", np.array([0.0, 1.0]), 1, out)[0] == 3
