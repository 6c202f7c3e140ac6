import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepshrink.coding import Coder
from deepshrink.errors import FormatError, InvalidHeader, LimitExceeded
from deepshrink.storage import TensorCoding, decode_tensor, decode_typed, encode_tensor
from deepshrink.util.limits import Limits


@st.composite
def tensors(draw):
    shape = tuple(draw(st.lists(st.integers(0, 40), min_size=1, max_size=4)))
    n = int(np.prod(shape))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["shared", "float", "zeros", "dense-shared", "half"]))
    density = draw(st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.0]))
    if kind == "zeros":
        a = np.zeros(n, np.float32)
    elif kind == "half":
        a = rng.standard_normal(n).astype(np.float16).astype(np.float32) * (rng.random(n) < density)
    elif kind == "float":
        a = rng.standard_normal(n).astype(np.float32) * (rng.random(n) < density)
    else:
        k = draw(st.integers(1, 300))
        book = rng.standard_normal(k).astype(np.float32)
        a = book[rng.integers(0, k, n)]
        if kind == "shared":
            a = a * (rng.random(n) < density)
    return a.astype(np.float32).reshape(shape)


@settings(max_examples=80, deadline=None)
@given(tensors(), st.sampled_from(list(Coder)), st.one_of(st.none(), st.integers(1, 9)),
       st.sampled_from(["auto", "dense", "sparse"]))
def test_round_trip_is_bit_exact(array, coder, gap_bits, layout):
    enc = encode_tensor("w", array, TensorCoding(coder=coder, gap_bits=gap_bits, layout=layout))
    sections = {k: memoryview(v) for k, v in enc.sections.items()}
    out = decode_tensor("w", enc.descriptor, sections, Limits())
    assert out.dtype == np.float32 and out.shape == array.shape
    assert np.array_equal(out.view(np.uint32), array.view(np.uint32)) or np.array_equal(out, array)
    assert enc.report.nonzero == int((array != 0).sum())
    typed = decode_typed("w", enc.descriptor, sections, Limits())  # same bits, any shape, empty ones too
    assert typed.shape == array.shape and np.array_equal(typed.to_dense().view(np.uint32), out.view(np.uint32))
    csr = typed.csr()
    # by value: the CSR view keeps no zero entries, so a stored -0.0 comes back as +0.0 (values are
    # finite, so equal floats are equal bits everywhere else)
    assert np.array_equal(csr.to_dense().reshape(-1), out.reshape(-1))


def test_auto_layout_picks_the_smallest():
    rng = np.random.default_rng(0)
    book = rng.standard_normal(31).astype(np.float32)
    a = book[rng.integers(0, 31, 100_000)] * (rng.random(100_000) < 0.05)
    sizes = {lay: encode_tensor("w", a, TensorCoding(layout=lay)).nbytes for lay in ("dense", "sparse")}
    auto = encode_tensor("w", a, TensorCoding())
    assert auto.nbytes == min(sizes.values())
    assert auto.descriptor["layout"] == "sparse" and auto.descriptor["enc"] == "codebook"
    assert auto.nbytes < a.size * 4 / 20  # a 5%-dense 5-bit tensor is far smaller than float32


def test_uncompressed_tensors_are_raw():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    enc = encode_tensor("b", a, TensorCoding(compress=False))
    assert enc.descriptor == {"shape": [2, 3], "dtype": "float16", "enc": "raw"}  # small ints are exact in fp16
    assert enc.sections == {"b": a.astype("<f2").tobytes()}
    b = a + np.float32(1e-4)
    enc = encode_tensor("b", b, TensorCoding(compress=False))
    assert enc.descriptor["dtype"] == "float32" and enc.sections == {"b": b.astype("<f4").tobytes()}


def _encoded():
    a = np.zeros(1000, np.float32)
    a[::7] = np.resize(np.array([0.5, -0.25, 1.0], np.float32), len(a[::7]))
    enc = encode_tensor("w", a.reshape(10, 100), TensorCoding(layout="sparse"))
    return enc.descriptor, {k: memoryview(v) for k, v in enc.sections.items()}


@pytest.mark.parametrize(
    "mutate, error",
    [
        (lambda d, s: d.update(shape=[10, 10**9]), LimitExceeded),
        (lambda d, s: d.update(shape=[-1, 100]), InvalidHeader),
        (lambda d, s: d.update(shape="big"), InvalidHeader),
        (lambda d, s: d.update(enc="pickle"), InvalidHeader),
        (lambda d, s: d.update(dtype="float64"), InvalidHeader),
        (lambda d, s: d.pop("dtype"), InvalidHeader),
        (lambda d, s: d.update(k=2), InvalidHeader),
        (lambda d, s: d.update(layout="diagonal"), InvalidHeader),
        (lambda d, s: d["sym"].update(n=10**8), InvalidHeader),
        (lambda d, s: d["sym"].update(coder="zip"), InvalidHeader),
        (lambda d, s: d["gap"].update(n=d["gap"]["n"] - 1), FormatError),
        (lambda d, s: d.update(gap_bits=2), FormatError),
        (lambda d, s: d.update(extra=1), InvalidHeader),
        (lambda d, s: s.pop("w:gap"), InvalidHeader),
        (lambda d, s: s.update({"w:sym": memoryview(b"\x00" * 3)}), FormatError),
        (lambda d, s: d.update(shape=[10, 10]), FormatError),
    ],
)
def test_hostile_descriptors_raise_format_errors(mutate, error):
    desc, sections = _encoded()
    mutate(desc, sections)
    with pytest.raises(error):
        decode_tensor("w", desc, sections, Limits())


def test_auto_gap_bits_is_never_worse_than_a_fixed_width():
    rng = np.random.default_rng(3)
    a = rng.standard_normal(50_000).astype(np.float32) * (rng.random(50_000) < 0.03)
    a = np.round(a * 4) / 4  # few distinct values: codebook encoding
    auto = encode_tensor("w", a, TensorCoding(gap_bits=None, layout="sparse"))
    for g in (3, 5, 8):
        assert auto.nbytes <= encode_tensor("w", a, TensorCoding(gap_bits=g, layout="sparse")).nbytes
    assert 2 <= auto.descriptor["gap_bits"] <= 10
