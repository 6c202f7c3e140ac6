"""The ``quant`` encoding and :class:`QuantTensor`: bit-exact round trips with every coder, level
set and granularity; exact bit widths with the fixed coder; hostile descriptors and corrupt
sections give typed errors naming what is wrong."""

from __future__ import annotations

import copy
import math

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepshrink.coding import Coder
from deepshrink.errors import FormatError, InvalidHeader, InvalidValue, LimitExceeded
from deepshrink.quant.encoding import QuantTensor
from deepshrink.storage import ENCODINGS, TensorCoding, check_descriptor, decode_tensor, decode_typed, encode_tensor
from deepshrink.storage.tensor_codec import StaleForm
from deepshrink.util.limits import Limits

QUANT = ENCODINGS["quant"]


def _views(sections):
    return {k: memoryview(v) for k, v in sections.items()}

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
from helpers import random_quant  # noqa: E402


def _bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def make(shape, levels="int", bits=4, granularity="channel", symmetric=True, group_size=None, seed=0, half=True):
    """A random QuantTensor (zeros included) of ``shape``, float16-exact scales by default."""
    return random_quant(shape, levels, bits, granularity, symmetric, seed=seed, group_size=group_size, half=half)


def encode(t, coder=Coder.FIXED):
    return encode_tensor("w", t.to_dense(), TensorCoding(coder=coder, form=t))


def check_round_trip(t, coder):
    enc = encode(t, coder)
    assert enc.descriptor["enc"] == "quant"
    checked = check_descriptor("w", enc.descriptor, Limits())
    assert set(checked.sections) == set(enc.sections)
    views = _views(enc.sections)
    back = decode_typed("w", enc.descriptor, views, Limits())
    assert isinstance(back, QuantTensor)
    assert np.array_equal(back.q, t.q) and np.array_equal(_bits(back.scale), _bits(t.scale))
    assert (back.zero is None) == (t.zero is None) and (t.zero is None or np.array_equal(back.zero, t.zero))
    dense = decode_tensor("w", enc.descriptor, views, Limits())
    assert np.array_equal(_bits(dense), _bits(t.to_dense()))
    csr = back.csr()
    assert np.array_equal(_bits(csr.to_dense()), _bits(dense.reshape(csr.shape)))
    assert csr.nnz == np.count_nonzero(dense) and csr.codebook is None
    assert enc.report.nonzero == np.count_nonzero(dense) and enc.report.value_bits == t.bits
    return enc


@given(rows=st.integers(1, 9), cols=st.integers(1, 40), levels=st.sampled_from(["int", "binary", "ternary"]),
       bits=st.integers(2, 8), gran=st.sampled_from(["tensor", "channel"]), symmetric=st.booleans(),
       coder=st.sampled_from(list(Coder)), seed=st.integers(0, 100), half=st.booleans())
@settings(max_examples=60, deadline=None)
def test_round_trips_are_bit_exact(rows, cols, levels, bits, gran, symmetric, coder, seed, half):
    bits = {"binary": 1, "ternary": 2}.get(levels, bits)
    symmetric = symmetric or levels != "int"
    check_round_trip(make((rows, cols), levels, bits, gran, symmetric, seed=seed, half=half), coder)


@pytest.mark.parametrize("shape, group", [((6, 3, 2, 2), 4), ((8, 12), 3), ((10,), 5)])
def test_groups_within_rows_and_conv_shapes(shape, group):
    t = make(shape, "int", 3, "group", symmetric=False, group_size=group)
    enc = check_round_trip(t, Coder.HUFFMAN)
    assert enc.descriptor["group"] == group and len(enc.sections["w:zp"]) == math.prod(shape) // group


@pytest.mark.parametrize("levels, bits, per_byte", [("int", 4, 2), ("int", 2, 4), ("binary", 1, 8), ("ternary", 2, 5),
                                                    ("int", 8, 1)])
def test_fixed_coder_packs_the_real_bit_width(levels, bits, per_byte):
    """An odd row width does not cost a byte per row: the whole tensor is one packed stream
    (ternary: five trits a byte, 1.6 bits per weight)."""
    t = make((7, 13), levels, bits)
    enc = encode(t)
    assert len(enc.sections["w:q"]) == math.ceil(91 / per_byte)
    assert len(enc.sections["w:scale"]) == 7 * 2  # per-channel float16 scales
    assert "w:zp" not in enc.sections


def test_scales_are_float32_when_float16_would_change_them():
    t = make((4, 8), half=False)
    assert encode(t).descriptor["dtype"] == "float32"
    assert encode(make((4, 8))).descriptor["dtype"] == "float16"


def test_the_entropy_coder_is_kept_only_when_it_is_smaller():
    peaked = make((50, 40), "ternary", 2)
    q = np.ones_like(peaked.q)
    q[::7, ::3] = 0
    peaked = QuantTensor(q, 2, "ternary", 40, peaked.scale)
    assert encode(peaked, Coder.HUFFMAN).descriptor["q"]["coder"] == "huffman"
    uniform = make((50, 40), "int", 8)
    assert encode(uniform, Coder.HUFFMAN).descriptor["q"]["coder"] == "fixed"


def test_a_stale_form_is_refused():
    t = make((4, 8))
    dense = t.to_dense().copy()
    dense[0, 0] += 1e-3
    with pytest.raises(StaleForm):
        encode_tensor("w", dense, TensorCoding(form=t))


# ----------------------------------------------------------------------------------------------
# hostile descriptors and sections


@pytest.fixture
def stored():
    t = make((6, 10), "int", 4, "channel", symmetric=False)
    enc = encode(t, Coder.HUFFMAN)
    return copy.deepcopy(enc.descriptor), _views(enc.sections)


@pytest.mark.parametrize("field", [f.name for f in QUANT.fields])
def test_a_missing_field_is_named(stored, field):
    desc, _ = stored
    del desc[field]
    with pytest.raises(InvalidHeader, match=f"'{field}'|unknown encoding"):
        check_descriptor("w", desc, Limits())


@pytest.mark.parametrize("field", [f.name for f in QUANT.fields])
@pytest.mark.parametrize("bad", [["x"], "7", 1.5, None, {"a": 1}])
def test_a_field_of_the_wrong_type_is_named(stored, field, bad):
    desc, _ = stored
    desc[field] = bad
    with pytest.raises(InvalidHeader, match=f"{field}|unknown encoding"):
        check_descriptor("w", desc, Limits())


@pytest.mark.parametrize("change, needle", [
    ({"bits": 0}, "bits"), ({"bits": 9}, "bits"), ({"bits": True}, "bits"), ({"levels": "binary"}, "bits"),
    ({"levels": "ternary", "bits": 2}, "symmetric"), ({"levels": "quinary"}, "levels"),
    ({"group": 0}, "group"), ({"group": 7}, "group"), ({"group": 120}, "group"), ({"group": 20}, "group"),
    ({"symmetric": 1}, "symmetric"), ({"scale": 1.0}, "unexpected"),
])
def test_inconsistent_descriptors_are_refused(stored, change, needle):
    desc, _ = stored
    with pytest.raises(InvalidHeader, match=needle):
        check_descriptor("w", {**desc, **change}, Limits())


def test_per_tensor_groups_may_span_rows(stored):
    desc, _ = stored
    assert check_descriptor("w", {**desc, "group": 60}, Limits()).fields["group"] == 60


def test_shapes_beyond_the_limits(stored):
    desc, _ = stored
    with pytest.raises(LimitExceeded):
        check_descriptor("w", {**desc, "shape": [0, 2**40]}, Limits())


@pytest.mark.parametrize("suffix", [":q", ":scale", ":zp"])
def test_sections_of_the_wrong_length_or_missing(stored, suffix):
    desc, sections = stored
    key = "w" + suffix
    for data in (sections[key][:-1], bytes(sections[key]) + b"\x00"):
        with pytest.raises(FormatError):
            decode_tensor("w", desc, {**sections, key: memoryview(data)}, Limits())
    with pytest.raises(InvalidHeader, match=f"{key!r} is missing"):
        decode_tensor("w", desc, {k: v for k, v in sections.items() if k != key}, Limits())


def test_a_symmetric_tensor_claims_no_zero_point_section():
    enc = encode(make((3, 4)))
    assert check_descriptor("w", enc.descriptor, Limits()).sections == ("w:q", "w:scale")


def test_stream_counts_and_widths_that_do_not_fit(stored):
    desc, sections = stored
    for n in (desc["q"]["n"] - 1, desc["q"]["n"] + 1, 10**12):
        bad = copy.deepcopy(desc)
        bad["q"]["n"] = n
        with pytest.raises(FormatError):
            decode_tensor("w", bad, sections, Limits())
    bad = copy.deepcopy(desc)
    bad["q"]["bits"] = 3
    with pytest.raises(InvalidHeader, match="cannot hold an alphabet"):
        check_descriptor("w", bad, Limits())


@pytest.mark.parametrize("value", [np.nan, np.inf, 0.0, -0.0, -1.0])
def test_scales_must_be_positive_finite(stored, value):
    desc, sections = stored
    scale = np.frombuffer(sections["w:scale"], np.dtype(desc["dtype"])).copy()
    scale[2] = value
    with pytest.raises(InvalidValue, match="'w'"):
        decode_typed("w", desc, {**sections, "w:scale": memoryview(scale.tobytes())}, Limits())


def test_zero_points_must_lie_on_the_grid(stored):
    desc, sections = stored
    zp = np.frombuffer(sections["w:zp"], np.uint8).copy()
    zp[0] = 16  # 4 bits: 0..15
    with pytest.raises(InvalidValue, match="zero point"):
        decode_tensor("w", desc, {**sections, "w:zp": memoryview(zp.tobytes())}, Limits())


def test_symbols_beyond_the_ternary_alphabet_are_corrupt():
    t = make((4, 8), "ternary", 2)
    enc = encode(t)  # fixed 2-bit codes: the byte 0xff holds four symbols 3, outside {0, 1, 2}
    bad = {**_views(enc.sections), "w:q": memoryview(b"\xff" * len(enc.sections["w:q"]))}
    with pytest.raises(FormatError, match="outside"):
        decode_typed("w", enc.descriptor, bad, Limits())


def test_ternary_padding_trits_must_be_zero():
    """The last group of five trits is zero-padded; a stream whose padding is not zero is corrupt."""
    from deepshrink.coding import encode_stream
    from deepshrink.errors import CorruptStream
    from deepshrink.quant.encoding import pack_trits, unpack_trits
    from deepshrink.storage import decode_tensor
    from deepshrink.util.limits import Limits

    q = np.random.default_rng(1).integers(0, 3, 91)
    assert np.array_equal(unpack_trits(pack_trits(q), 91), q)
    t = make((7, 13), "ternary", 2)
    enc = encode(t)
    symbols = pack_trits(t.q.reshape(-1).astype(np.int64))
    symbols[-1] += 1  # the 92nd..95th trits: padding
    bad = {**enc.sections, "w:q": encode_stream(symbols, 243, Coder.FIXED, bits=8)}
    with pytest.raises(CorruptStream, match="padding"):
        decode_tensor("w", enc.descriptor, {k: memoryview(v) for k, v in bad.items()}, Limits())
