"""dct/sparse and hashed: exact round trips of the typed forms, validation of hostile
descriptors, corrupted sections refused with typed errors."""

import numpy as np
import pytest

from deepshrink.coding import Coder
from deepshrink.errors import FormatError, InvalidHeader, LimitExceeded
from deepshrink.storage import check_descriptor, decode_tensor, decode_typed
from deepshrink.storage.encodings import ENCODINGS, form_encoding
from deepshrink.storage.tensor_codec import TensorCoding, encode_tensor
from deepshrink.storage.tensors import SparseCodebookTensor
from deepshrink.transform.dct import coefficient_shape, kernel_block
from deepshrink.transform.tensors import DCTTensor, HashedTensor
from deepshrink.util.limits import Limits


def dct_form(shape, keep=0.1, k=31, seed=0) -> DCTTensor:
    rng = np.random.default_rng(seed)
    cshape = coefficient_shape(shape, kernel_block(shape, 8))
    n = int(np.prod(cshape))
    positions = np.sort(rng.choice(n, max(1, int(keep * n)), replace=False)).astype(np.int64)
    codebook = rng.standard_normal(k).astype(np.float32)
    return DCTTensor(shape, SparseCodebookTensor(cshape, positions, rng.integers(0, k, positions.size).astype(np.uint8),
                                                 codebook))


def hashed_form(shape, buckets=50, block=(1, 1), sign=True) -> HashedTensor:
    values = np.random.default_rng(1).standard_normal(buckets).astype(np.float16).astype(np.float32)
    return HashedTensor(shape, values, 12345, sign, block)


def roundtrip(name, form, coder=Coder.HUFFMAN):
    enc = encode_tensor(name, form.to_dense(), TensorCoding(coder=coder, form=form))
    sections = {k: memoryview(v) for k, v in enc.sections.items()}
    return enc, decode_typed(name, enc.descriptor, sections, Limits()), sections


FORMS = {
    "dct-linear": lambda: dct_form((30, 45)),
    "dct-conv": lambda: dct_form((6, 3, 5, 5), keep=0.3),
    "dct-all-kept": lambda: dct_form((10, 9), keep=1.0, k=200),
    "hashed": lambda: hashed_form((30, 45)),
    "hashed-unsigned": lambda: hashed_form((30, 45), sign=False),
    "hashed-dct": lambda: hashed_form((6, 3, 5, 5), 40, block=(5, 5)),
    "hashed-dct-padded": lambda: hashed_form((30, 45), 40, block=(8, 8)),
}


@pytest.mark.parametrize("kind", FORMS)
@pytest.mark.parametrize("coder", list(Coder))
def test_forms_round_trip_bit_exactly(kind, coder):
    form = FORMS[kind]()
    enc, back, sections = roundtrip("w", form, coder)
    assert type(back) is type(form) and back.shape == form.shape
    dense = form.to_dense()
    assert np.array_equal(back.to_dense().view(np.uint32), dense.view(np.uint32))
    assert np.array_equal(decode_tensor("w", enc.descriptor, sections, Limits()).view(np.uint32), dense.view(np.uint32))
    assert np.array_equal(back.csr().to_dense(), dense.reshape(dense.shape[0], -1) if dense.ndim > 1 else dense[None])
    rep = enc.report
    assert rep.shape == form.shape and rep.total_bytes == sum(len(v) for v in enc.sections.values())
    if kind != "dct-all-kept":  # 256 padded coefficients of a 90-weight tensor, a 149-value codebook
        assert rep.total_bytes < dense.nbytes


def test_dct_descriptor_and_report():
    form = dct_form((300, 784), keep=0.05)
    enc, back, _ = roundtrip("fc1.weight", form)
    d = enc.descriptor
    assert d["enc"] == "dct" and d["layout"] == "sparse" and d["block"] == [8, 8] and d["shape"] == [300, 784]
    assert form_encoding(form) is ENCODINGS["dct/sparse"] and form_encoding(hashed_form((3, 3))) is ENCODINGS["hashed"]
    assert back.kept == form.kept
    assert enc.report.codebook_size == 31 and enc.report.gap_bits == d["gap_bits"]
    assert all(s.entropy_bytes is not None for s in enc.report.streams.values())


def test_hashed_stores_only_the_buckets():
    form = hashed_form((300, 784), buckets=14700)
    enc, back, _ = roundtrip("fc1.weight", form)
    assert enc.descriptor == {"shape": [300, 784], "dtype": "float16", "enc": "hashed", "seed": 12345, "sign": 1,
                              "block": [1, 1], "buckets": 14700}
    assert enc.nbytes == 2 * 14700
    assert back.seed == 12345 and np.array_equal(back.buckets, form.buckets)


def _desc(kind):
    return roundtrip("w", FORMS[kind]())[0].descriptor


@pytest.mark.parametrize("kind,change,error,match", [
    ("dct-linear", {"block": [0, 8]}, InvalidHeader, "'block'"),
    ("dct-linear", {"block": [65, 8]}, InvalidHeader, "'block'"),
    ("dct-linear", {"block": [8]}, InvalidHeader, "'block'"),
    ("dct-linear", {"block": [8, True]}, InvalidHeader, "'block'"),
    ("dct-linear", {"block": None}, InvalidHeader, "'block'"),
    ("dct-linear", {"k": 70000}, InvalidHeader, "'k'"),
    ("dct-linear", {"gap_bits": 0}, InvalidHeader, "'gap_bits'"),
    ("dct-linear", {"extra": 1}, InvalidHeader, "unexpected field"),
    ("dct-linear", {"shape": [30, -45]}, InvalidHeader, "shape"),
    ("hashed", {"buckets": 0}, InvalidHeader, "'buckets'"),
    ("hashed", {"buckets": 30 * 45 + 1}, InvalidHeader, "'buckets'"),
    ("hashed", {"seed": -1}, InvalidHeader, "'seed'"),
    ("hashed", {"seed": 1 << 32}, InvalidHeader, "'seed'"),
    ("hashed", {"seed": 1.5}, InvalidHeader, "'seed'"),
    ("hashed", {"sign": True}, InvalidHeader, "'sign'"),
    ("hashed", {"block": [8, 70]}, InvalidHeader, "'block'"),
    ("hashed", {"dtype": "float64"}, InvalidHeader, "'dtype'"),
])
def test_hostile_descriptors_are_refused_by_field(kind, change, error, match):
    desc = {**_desc(kind), **change}
    with pytest.raises(error, match=match):
        check_descriptor("w", desc, Limits())


@pytest.mark.parametrize("kind,missing", [("dct-linear", "block"), ("dct-linear", "sym"), ("dct-linear", "gap"),
                                          ("hashed", "seed"), ("hashed", "buckets"), ("hashed", "sign"),
                                          ("hashed", "block")])
def test_missing_fields_are_named(kind, missing):
    desc = {k: v for k, v in _desc(kind).items() if k != missing}
    with pytest.raises(InvalidHeader, match=repr(missing)):
        check_descriptor("w", desc, Limits())


def test_limits_bound_the_coefficient_array_and_the_hashed_values():
    small = Limits(max_tensor_elements=1000)
    with pytest.raises(LimitExceeded):
        check_descriptor("w", {"shape": [1, 1000], "dtype": "float32", "enc": "hashed", "seed": 0, "sign": 1,
                               "block": [64, 64], "buckets": 10}, small)
    with pytest.raises(InvalidHeader, match="'buckets'"):  # 1000 weights hashed: at most 1000 buckets
        check_descriptor("w", {"shape": [1, 1000], "dtype": "float32", "enc": "hashed", "seed": 0, "sign": 1,
                               "block": [1, 1], "buckets": 1001}, small)
    with pytest.raises(LimitExceeded):  # 1000 weights, 64 × 1000 padded coefficients
        check_descriptor("w", {**_desc("dct-linear"), "shape": [1, 1000], "block": [64, 8]}, small)
    # the largest tensor a file may hold hashes in bounded chunks: 2^27 values are checked, not built here
    checked = check_descriptor("w", {"shape": [1 << 13, 1 << 14], "dtype": "float32", "enc": "hashed", "seed": 0,
                                     "sign": 1, "block": [1, 1], "buckets": 1}, Limits())
    assert checked.numel == Limits().max_tensor_elements


@pytest.mark.parametrize("kind", ["dct-linear", "hashed", "hashed-dct"])
def test_corrupt_or_missing_sections_are_format_errors(kind):
    enc, _, sections = roundtrip("w", FORMS[kind]())
    for key, data in sections.items():
        for bad in (data[:-1], bytes(data) + b"\0", b""):
            with pytest.raises(FormatError):
                decode_typed("w", enc.descriptor, {**sections, key: memoryview(bytes(bad))}, Limits())
        with pytest.raises(InvalidHeader, match="missing"):
            decode_typed("w", enc.descriptor, {k: v for k, v in sections.items() if k != key}, Limits())


def test_non_finite_buckets_and_codebooks_are_refused():
    for kind, suffix in (("hashed", ":bk"), ("dct-linear", ":cb")):
        enc, _, sections = roundtrip("w", FORMS[kind]())
        dtype = np.float16 if enc.descriptor["dtype"] == "float16" else np.float32
        vals = np.frombuffer(sections["w" + suffix], dtype=dtype).copy()
        vals[0] = np.nan
        with pytest.raises(FormatError, match="non-finite"):
            decode_typed("w", enc.descriptor, {**sections, "w" + suffix: memoryview(vals.tobytes())}, Limits())


def test_random_bytes_in_streams_never_crash():
    enc, _, sections = roundtrip("w", FORMS["dct-linear"]())
    rng = np.random.default_rng(0)
    for _ in range(30):
        key = "w:gap" if rng.random() < 0.5 else "w:sym"
        data = bytearray(sections[key])
        data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
        try:
            out = decode_tensor("w", enc.descriptor, {**sections, key: memoryview(bytes(data))}, Limits())
        except FormatError:
            continue
        assert out.shape == (30, 45) and out.dtype == np.float32
