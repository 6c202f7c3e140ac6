"""The context-adaptive binary coder (deepshrink.coding.context): round trips, the compiled coder
against the pure-Python specification, and untrusted streams."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepshrink.coding import Coder, _util, context, decode_stream, encode_stream, stream_size
from deepshrink.errors import ConfigError, CorruptStream

needs_c = pytest.mark.skipif(_util.FAST is None, reason="the C extension deepshrink.coding._fastcode is not built")


@st.composite
def matrices(draw, max_rows: int = 10, max_cols: int = 36):
    """(mask, values, k, z, grid): a random mask of any density, codebook indices of the kept
    weights, a codebook size with z negative entries, and a grid that fits the row."""
    rows, cols = draw(st.integers(0, max_rows)), draw(st.integers(0, max_cols))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    density = draw(st.sampled_from([0.0, 0.05, 0.3, 0.9, 1.0]))
    mask = rng.random((rows, cols)) < density
    k = draw(st.integers(1, 300))
    z = draw(st.integers(0, k))
    values = rng.integers(0, k, int(mask.sum()))
    grids = [None] + [(h, w) for h in range(1, 7) for w in range(1, 7) if cols and cols % (h * w) == 0]
    return mask, values, k, z, draw(st.sampled_from(grids))


def _decode_both(*args):
    """The compiled and the reference outcome of ``context.decode(*args)``."""
    out = []
    fast = _util.FAST
    for f in ([fast] if fast is not None else []) + [None]:
        _util.FAST = f
        try:
            out.append(("ok", context.decode(*args)))
        except CorruptStream as exc:
            out.append(("error", str(exc)))
        finally:
            _util.FAST = fast
    return out


@settings(max_examples=60, deadline=None)
@given(matrices())
def test_round_trip_and_the_reference_gives_the_same_bytes(case):
    mask, values, k, z, grid = case
    data = context.encode(mask, values, k, z, grid)
    assert data == context.encode_reference(mask, values, k, z, grid)
    for outcome, result in _decode_both(*data, *mask.shape, k, z, int(mask.sum()), grid):
        assert outcome == "ok"
        np.testing.assert_array_equal(result[0], mask)
        np.testing.assert_array_equal(result[1], values)
        assert result[1].dtype == np.int64


@pytest.mark.parametrize("mask", [np.zeros((0, 0), bool), np.zeros((3, 0), bool), np.zeros((1, 1), bool),
                                  np.ones((1, 1), bool), np.zeros((40, 50), bool), np.ones((40, 50), bool)])
def test_empty_single_all_zero_and_all_kept(mask):
    values = np.arange(int(mask.sum())) % 7
    mdata, vdata = context.encode(mask, values, 7, 3)
    back, vals = context.decode(mdata, vdata, *mask.shape, 7, 3, int(mask.sum()))
    np.testing.assert_array_equal(back, mask)
    np.testing.assert_array_equal(vals, values)
    if mask.size >= 2000:  # an adaptive model codes a constant mask in a few bytes
        assert len(mdata) < 40


def test_contexts_pay_on_structured_masks():
    """A mask whose rows keep image-like blobs (each neuron a receptive field in the 28x28 inputs
    of a first layer) codes far below its order-0 entropy, and the grid context helps."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28]
    centres = rng.integers(5, 23, (100, 2))
    blob = ((yy[None] - centres[:, :1, None]) ** 2 + (xx[None] - centres[:, 1:, None]) ** 2 < 25).reshape(100, 784)
    mask = rng.random((100, 784)) < np.where(blob, 0.7, 0.01)
    values = rng.integers(0, 31, int(mask.sum()))
    p = mask.mean()
    order0 = mask.size * -(p * np.log2(p) + (1 - p) * np.log2(1 - p)) / 8
    plain = context.encode(mask, values, 31, 15)
    grid = context.encode(mask, values, 31, 15, (28, 28))
    assert len(plain[0]) < 0.85 * order0
    assert len(grid[0]) < 0.95 * len(plain[0])


@pytest.mark.parametrize("bad", [
    dict(mask=np.zeros(5, bool)),  # not 2-D
    dict(values=np.array([0, 1])),  # one value per kept weight
    dict(values=np.array([9])),  # not below k
    dict(k=0), dict(z=8), dict(grid=(2, 2)),  # the row of 3 is no 2x2 image
])
def test_encoder_arguments_are_checked(bad):
    args = dict(mask=np.array([[0, 1, 0]], bool), values=np.array([3]), k=7, z=3, grid=None) | bad
    with pytest.raises(ConfigError):
        context.encode(args["mask"], args["values"], args["k"], args["z"], args["grid"])


def test_context_is_no_stream_coder():
    with pytest.raises(ConfigError, match="whole tensors"):
        encode_stream(np.array([0, 1]), 2, Coder.CONTEXT)
    with pytest.raises(ConfigError, match="whole tensors"):
        stream_size(np.array([1, 1]), "context")
    with pytest.raises(CorruptStream, match="codebook/context"):  # a file's descriptor named it for a stream
        decode_stream(b"\x01", "context", 1, 2)


def _sample():
    rng = np.random.default_rng(1)
    mask = rng.random((30, 49)) < 0.2
    values = rng.integers(0, 20, int(mask.sum()))
    return mask, values, context.encode(mask, values, 20, 9, (7, 7))


def test_truncated_extended_and_miscounted_streams_are_refused():
    mask, values, (mdata, vdata) = _sample()
    n = int(mask.sum())
    cases = [(mdata[:-1], vdata, n), (mdata[:1], vdata, n), (b"", vdata, n), (mdata + b"\x00", vdata, n),
             (mdata, vdata[:-1], n), (mdata, vdata + b"\x07", n), (mdata, b"", n),
             (mdata, vdata, n - 1), (mdata, vdata, n + 1)]
    for m, v, count in cases:
        outcomes = _decode_both(m, v, *mask.shape, 20, 9, count, (7, 7))
        assert all(o == outcomes[0] for o in outcomes), outcomes
        assert outcomes[0][0] == "error", (len(m), len(v), count)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_corrupt_streams_decode_alike_in_bounded_time(data):
    """Flipped, overwritten or random bytes: both decoders give the same tensor or the same
    CorruptStream, quickly; never a crash."""
    mask, values, (mdata, vdata) = _sample()
    which = data.draw(st.sampled_from(["mask", "val"]))
    b = bytearray(mdata if which == "mask" else vdata)
    kind = data.draw(st.sampled_from(["flip", "noise"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << data.draw(st.integers(0, 7))
    else:
        b = bytearray(np.random.default_rng(data.draw(st.integers(0, 999))).integers(0, 256, len(b), dtype=np.uint8))
    m, v = (bytes(b), vdata) if which == "mask" else (mdata, bytes(b))
    start = time.perf_counter()
    outcomes = _decode_both(m, v, *mask.shape, 20, 9, int(mask.sum()), (7, 7))
    assert time.perf_counter() - start < 5
    first = outcomes[0]
    for other in outcomes[1:]:
        assert other[0] == first[0]
        if first[0] == "error":
            assert other[1] == first[1]
        else:
            np.testing.assert_array_equal(other[1][0], first[1][0])
            np.testing.assert_array_equal(other[1][1], first[1][1])
    if first[0] == "ok":  # a flip may decode to another valid tensor of the declared shape and count
        assert first[1][0].shape == mask.shape and first[1][1].size == mask.sum()
        assert first[1][1].min(initial=0) >= 0 and first[1][1].max(initial=0) < 20


@needs_c
def test_a_huge_declared_tensor_with_a_tiny_stream_fails_fast():
    """The header bounds the work; a stream far too short for it ends early."""
    start = time.perf_counter()
    with pytest.raises(CorruptStream):
        context.decode(b"\x12\x34", b"", 2000, 2000, 31, 15, 5)
    assert time.perf_counter() - start < 5
