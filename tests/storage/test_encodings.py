"""The encoding registry, encoding by encoding, on real weights: a LeNet-300-100 trained briefly
on Fashion-MNIST, then pruned and shared with deepshrink's own functions.

For every registered encoding: encode → validate → decode → decode_typed → report, with the
typed tensor, its CSR view and the report checked against the dense decode; then hostile
descriptors (a missing field, a wrong type, an unknown field, sections of the wrong length)
give typed errors naming what is wrong."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import deepshrink as ds
from deepshrink.coding import Coder
from deepshrink.errors import CorruptStream, FormatError, InvalidHeader, InvalidValue, LimitExceeded
from deepshrink.fileformat.container import unpack
from deepshrink.prune import magnitude_mask
from deepshrink.share.kmeans import kmeans_1d
from deepshrink.storage import (
    ENCODINGS,
    CodebookTensor,
    DenseTensor,
    Encoding,
    SparseCodebookTensor,
    SparseTensor,
    TensorCoding,
    check_descriptor,
    decode_tensor,
    decode_typed,
    encode_tensor,
    register_encoding,
    tensor_report,
)
from deepshrink.storage.fields import MAX_DIMS
from deepshrink.util.limits import Limits

#: The encodings chosen by analysing a float tensor; those that store a stage's typed form as it is
#: (``writes_forms``: quantised, hashed, DCT tensors) are tested with their packages' tests.
ANALYSED = list(ENCODINGS)  # every encoding: those that store a stage's typed form through FORMS

GOLDEN = Path(__file__).parents[1] / "fileformat" / "golden" / "lenet300-pruned-shared-v1.dsz"


@pytest.fixture(scope="module")
def weights(fashion_small) -> dict[str, np.ndarray]:
    """fc1 and fc2 weights and a bias of a LeNet-300-100 trained for one epoch: as trained,
    pruned (90%), pruned and 5-bit shared, shared but not pruned, and shared in float16."""
    torch.manual_seed(0)
    model = ds.build_model("lenet-300-100")
    ds.fit(model, fashion_small.tensors("train"), fashion_small.tensors("val"), ds.TrainConfig(epochs=1, seed=0),
           progress=False)
    out = {}
    for layer in ("fc1", "fc2"):
        w = getattr(model, layer).weight.detach()
        pruned = (w * magnitude_mask(w, sparsity=0.9)).numpy()
        nz = pruned != 0
        centroids, labels = kmeans_1d(pruned[nz], 32)
        shared = np.zeros_like(pruned)
        shared[nz] = centroids[labels]
        everywhere, labels_all = kmeans_1d(w.numpy().reshape(-1), 16)
        out[f"{layer}.trained"] = w.numpy().copy()
        out[f"{layer}.pruned"] = pruned
        out[f"{layer}.shared"] = shared
        out[f"{layer}.dense_shared"] = everywhere[labels_all].reshape(w.shape)
        out[f"{layer}.half"] = shared.astype(np.float16).astype(np.float32)
    out["fc1.bias"] = model.fc1.bias.detach().numpy().copy()
    out["fc1.conv_view"] = out["fc2.shared"].reshape(100, 12, 5, 5)  # a conv-shaped weight
    out.update({key: form.to_dense() for key, form in FORMS.items()})
    return out


def _forms() -> dict:
    """Typed forms that stages store as they are (the weights are their dense values)."""
    from deepshrink.transform.dct import coefficient_shape
    from deepshrink.transform.tensors import DCTTensor, HashedTensor

    rng = np.random.default_rng(0)
    cshape = coefficient_shape((100, 60), (8, 8))
    positions = np.sort(rng.choice(int(np.prod(cshape)), 700, replace=False))
    coefficients = SparseCodebookTensor(cshape, positions, rng.integers(0, 31, 700).astype(np.uint8),
                                        rng.standard_normal(31).astype(np.float32))
    buckets = rng.standard_normal(300).astype(np.float32)
    from deepshrink.quant.encoding import QuantTensor

    def scales(n: int) -> np.ndarray:
        return rng.uniform(0.01, 0.1, n).astype(np.float32)

    return {"quant.int4": QuantTensor(rng.integers(0, 16, (100, 60)).astype(np.uint8), 4, "int", 60, scales(100)),
            "quant.asym_group": QuantTensor(rng.integers(0, 256, (20, 64)).astype(np.uint8), 8, "int", 32, scales(40),
                                            rng.integers(0, 256, 40).astype(np.uint8)),
            "quant.ternary": QuantTensor(rng.integers(0, 3, (20, 6, 5, 5)).astype(np.uint8), 2, "ternary", 150,
                                         scales(20)),"dct.linear": DCTTensor((100, 60), coefficients),
            "hashed.linear": HashedTensor((100, 60), buckets, 5, True, (1, 1)),
            "hashed.conv_dct": HashedTensor((20, 6, 5, 5), buckets, 9, False, (5, 5))}


FORMS = _forms()


# (tensor, coding) pairs that store each encoding; coders vary across cases
CASES = {
    "raw": [("fc1.trained", TensorCoding(compress=False)), ("fc1.bias", TensorCoding()),
            ("fc2.half", TensorCoding(compress=False))],
    "codebook/dense": [("fc2.dense_shared", TensorCoding(coder=Coder.HUFFMAN)),
                       ("fc1.shared", TensorCoding(coder=Coder.ANS, layout="dense")),
                       ("fc2.half", TensorCoding(coder=Coder.FIXED, layout="dense"))],
    "codebook/sparse": [("fc1.shared", TensorCoding()), ("fc2.half", TensorCoding(coder=Coder.ANS, gap_bits=None, layout="sparse")),
                        ("fc1.conv_view", TensorCoding(coder=Coder.FIXED, gap_bits=3))],
    "float/sparse": [("fc1.pruned", TensorCoding()), ("fc2.pruned", TensorCoding(coder=Coder.ANS, gap_bits=2)),
                     ("fc2.half", TensorCoding(max_codebook=8, layout="sparse"))],
    "dct/sparse": [("dct.linear", TensorCoding(coder=Coder.HUFFMAN, form=FORMS["dct.linear"]))],
    "quant": [("quant.int4", TensorCoding(coder=Coder.FIXED, form=FORMS["quant.int4"])),
              ("quant.asym_group", TensorCoding(form=FORMS["quant.asym_group"])),
              ("quant.ternary", TensorCoding(coder=Coder.ANS, form=FORMS["quant.ternary"]))],
    "hashed": [("hashed.linear", TensorCoding(form=FORMS["hashed.linear"])),
               ("hashed.conv_dct", TensorCoding(coder=Coder.ANS, form=FORMS["hashed.conv_dct"]))],
    "codebook/context": [("fc1.shared", TensorCoding(coder=Coder.CONTEXT)),
                         ("fc1.conv_view", TensorCoding(coder=Coder.CONTEXT)),
                         ("fc2.half", TensorCoding(coder=Coder.CONTEXT, grid=(6, 5)))],
}
TYPED = {"raw": DenseTensor, "codebook/dense": CodebookTensor, "codebook/sparse": SparseCodebookTensor,
         "float/sparse": SparseTensor, "dct/sparse": FORMS["dct.linear"].__class__,
         "hashed": FORMS["hashed.linear"].__class__, "quant": FORMS["quant.int4"].__class__,
         "codebook/context": SparseCodebookTensor}


def _views(sections: dict[str, bytes]) -> dict[str, memoryview]:
    return {k: memoryview(v) for k, v in sections.items()}


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def test_the_cases_cover_every_registered_encoding():
    assert set(CASES) == set(ANALYSED) == set(TYPED)


@pytest.mark.parametrize("encoding, case", [(e, i) for e, cases in CASES.items() for i in range(len(cases))])
def test_encode_validate_decode_typed_report(weights, encoding, case):
    key, coding = CASES[encoding][case]
    array = weights[key]
    enc = encode_tensor("t", array, coding)
    e = ENCODINGS[encoding]
    checked = check_descriptor("t", enc.descriptor, Limits())
    assert checked.encoding is e, f"{key} with {coding} was stored as {checked.encoding.name}"
    assert set(checked.sections) == set(enc.sections) and checked.shape == array.shape
    assert checked.dtype == np.dtype("<f2" if enc.descriptor["dtype"] == "float16" else "<f4")
    assert (enc.descriptor["dtype"] == "float16") == key.endswith("half")
    sections = _views(enc.sections)

    dense = decode_tensor("t", enc.descriptor, sections, Limits())
    assert dense.dtype == np.float32 and np.array_equal(dense, array)  # pruning leaves -0.0, stored as 0
    assert np.array_equal(_bits(dense), _bits(array + np.float32(0)))  # every other bit is kept

    typed = decode_typed("t", enc.descriptor, sections, Limits())
    assert type(typed) is TYPED[encoding] is e.typed
    assert typed.shape == array.shape and np.array_equal(_bits(typed.to_dense()), _bits(dense))
    assert np.array_equal(_bits(typed.dequantize()), _bits(dense))
    for name in typed.tensor_data_names:  # an optional array (a symmetric tensor's zero points) may be None
        assert isinstance(getattr(typed, name), np.ndarray) or getattr(typed, name) is None

    csr = typed.csr()
    rows = array.shape[0] if array.ndim >= 2 else 1
    assert csr.shape == (rows, array.size // max(rows, 1))
    assert np.array_equal(_bits(csr.to_dense()), _bits(dense.reshape(csr.shape)))
    assert np.array_equal(np.diff(csr.indptr), np.count_nonzero(dense.reshape(csr.shape), axis=1))
    assert csr.nnz == np.count_nonzero(dense)

    # the report from the file alone has the encoder's byte counts; decoding adds what streams tell
    quick, none = tensor_report("t", enc.descriptor, sections, Limits())
    full, decoded = tensor_report("t", enc.descriptor, sections, Limits(), decode=True)
    assert none is None and np.array_equal(_bits(decoded), _bits(dense))
    for r in (quick, full):
        assert (r.encoding, r.index_bytes, r.weight_bytes, r.total_bytes) == (
            encoding, enc.report.index_bytes, enc.report.weight_bytes, enc.nbytes)
        assert r.sections == {k: len(v) for k, v in enc.sections.items()}
        assert r.bits_per_weight == pytest.approx(8 * enc.nbytes / array.size)
        assert set(r.streams) == {s.stream for s in e.sections if s.stream}
    assert full.nonzero == enc.report.nonzero == np.count_nonzero(array)
    assert quick.nonzero in (None, full.nonzero)  # only codebook tensors need their streams for it
    for k, s in full.streams.items():
        assert s.entropy_bytes == pytest.approx(enc.report.streams[k].entropy_bytes)
        assert quick.streams[k].entropy_bytes is None
        # a stream may fall back to fixed-length codes when they are smaller (near-uniform int8 levels)
        assert s.coded_bytes == len(enc.sections[f"t:{k}"]) and s.coder in (coding.coder.value, "fixed")


def test_typed_codebook_indices_are_small_integers(weights):
    enc = encode_tensor("w", weights["fc1.shared"], TensorCoding(layout="sparse"))
    typed = decode_typed("w", enc.descriptor, _views(enc.sections), Limits())
    assert typed.indices.dtype == np.uint8 and typed.codebook.dtype == np.float32
    assert typed.nnz == np.count_nonzero(weights["fc1.shared"])  # no filler entries
    assert np.all(np.diff(typed.positions) > 0)


def test_golden_file_typed_tensors_equal_its_dense_decode():
    c = unpack(GOLDEN.read_bytes())
    kinds = set()
    for name, desc in c.header["tensors"].items():
        typed = decode_typed(name, desc, c.sections, Limits())
        kinds.add(type(typed))
        assert np.array_equal(_bits(typed.to_dense()), _bits(decode_tensor(name, desc, c.sections, Limits())))
    assert kinds == {DenseTensor, SparseCodebookTensor}


def test_sparse_float_keeps_a_stored_negative_zero_bit_exactly():
    """A filler entry may hold -0.0 in a file we did not write: the typed tensor keeps it."""
    a = np.zeros(100, np.float32)
    a[[3, 90]] = [1.5, -2.25]
    enc = encode_tensor("w", a, TensorCoding(max_codebook=1, layout="sparse", gap_bits=4))
    assert enc.descriptor["enc"] == "float" and enc.descriptor["n"] > 2  # fillers present
    vals = np.frombuffer(enc.sections["w:val"], np.dtype(enc.descriptor["dtype"])).copy()
    vals[1] = -0.0  # a filler
    sections = {**_views(enc.sections), "w:val": memoryview(vals.tobytes())}
    dense = decode_tensor("w", enc.descriptor, sections, Limits())
    assert np.signbit(dense).sum() == 2
    assert np.array_equal(_bits(decode_typed("w", enc.descriptor, sections, Limits()).to_dense()), _bits(dense))


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_every_encoding_documents_a_valid_example(encoding):
    e = ENCODINGS[encoding]
    checked = check_descriptor("x", e.example, Limits())
    assert checked.encoding is e and checked.sections == tuple("x" + s.suffix for s in e.sections)


def test_register_encoding_refuses_a_second_class_of_the_same_name():
    before = len(ENCODINGS)
    with pytest.raises(TypeError, match="already registered"):
        @register_encoding
        class Again(Encoding):
            name = "raw"
            enc = "raw2"
            layout = None
            own_fields = ()
            sections = ENCODINGS["raw"].sections
    assert len(ENCODINGS) == before


# ----------------------------------------------------------------------------------------------
# hostile descriptors, field by field


def _encoded(weights, encoding: str) -> tuple[dict, dict[str, memoryview]]:
    key, coding = CASES[encoding][0]
    enc = encode_tensor("w", weights[key], coding)
    return copy.deepcopy(enc.descriptor), _views(enc.sections)


FIELDS = [(n, f.name) for n in ANALYSED for f in ENCODINGS[n].fields]


@pytest.mark.parametrize("encoding, field", FIELDS)
def test_a_missing_field_is_named(weights, encoding, field):
    desc, _ = _encoded(weights, encoding)
    del desc[field]
    with pytest.raises(InvalidHeader, match=f"'{field}'|unknown encoding"):  # enc/layout select the class
        check_descriptor("w", desc, Limits())


@pytest.mark.parametrize("encoding, field", FIELDS)
@pytest.mark.parametrize("bad", [["x"], "7", 1.5, True, None, {"a": 1}])
def test_a_field_of_the_wrong_type_is_named(weights, encoding, field, bad):
    desc, _ = _encoded(weights, encoding)
    if isinstance(desc[field], bool) and isinstance(bad, bool):
        pytest.skip("a boolean is the right type for a boolean field")
    desc[field] = bad
    with pytest.raises(InvalidHeader, match=f"{field}|unknown encoding"):
        check_descriptor("w", desc, Limits())


@pytest.mark.parametrize("encoding", ANALYSED)
def test_an_unknown_field_is_named(weights, encoding):
    desc, _ = _encoded(weights, encoding)
    desc["scale"] = 1.0
    with pytest.raises(InvalidHeader, match=r"unexpected field\(s\) \['scale'\]"):
        check_descriptor("w", desc, Limits())


@pytest.mark.parametrize("encoding", ANALYSED)
def test_shapes_beyond_the_limits_and_dimensions(weights, encoding):
    desc, _ = _encoded(weights, encoding)
    with pytest.raises(LimitExceeded, match="every dimension"):
        check_descriptor("w", {**desc, "shape": [0, 2**40]}, Limits())
    with pytest.raises(InvalidHeader, match="shape"):
        check_descriptor("w", {**desc, "shape": [1] * (MAX_DIMS + 1)}, Limits())


@pytest.mark.parametrize("encoding", ANALYSED)
def test_sections_of_the_wrong_length(weights, encoding):
    """Every section one byte short, one byte long, and missing: a typed error, never a crash."""
    e = ENCODINGS[encoding]
    desc, sections = _encoded(weights, encoding)
    for s in e.sections:
        key = "w" + s.suffix
        if key not in sections:  # a section the descriptor does not claim (a symmetric tensor's zero points)
            continue
        for data in (sections[key][:-1], bytes(sections[key]) + b"\x00"):
            with pytest.raises(InvalidHeader if s.length else FormatError, match=None if s.stream else key):
                decode_tensor("w", desc, {**sections, key: memoryview(data)}, Limits())
        with pytest.raises(InvalidHeader, match=f"{key!r} is missing"):
            decode_tensor("w", desc, {k: v for k, v in sections.items() if k != key}, Limits())
        if s.length:  # fixed lengths are checked without decoding any stream
            with pytest.raises(InvalidHeader, match=key):
                tensor_report("w", desc, {**sections, key: sections[key][:-1]}, Limits())


@pytest.mark.parametrize("encoding", [e for e in ANALYSED if ENCODINGS[e].sections[-1].stream])
def test_stream_counts_that_do_not_fit(weights, encoding):
    e = ENCODINGS[encoding]
    desc, sections = _encoded(weights, encoding)
    for s in e.sections:
        if s.stream:
            for n in (desc[s.stream]["n"] - 1, desc[s.stream]["n"] + 1, 10**12):
                bad = copy.deepcopy(desc)
                bad[s.stream]["n"] = n
                with pytest.raises(FormatError):
                    decode_tensor("w", bad, sections, Limits())
            if desc[s.stream]["bits"] > 1:  # a mask's bits are already 1 bit each
                bad = copy.deepcopy(desc)
                bad[s.stream]["bits"] = 1  # too narrow for the alphabet
                with pytest.raises(InvalidHeader, match="cannot hold an alphabet"):
                    check_descriptor("w", bad, Limits())


def test_zeroed_streams_are_corrupt_not_crashes(weights):
    desc, sections = _encoded(weights, "codebook/sparse")
    zero = {**sections, "w:gap": memoryview(bytes(len(sections["w:gap"])))}
    with pytest.raises(CorruptStream):
        decode_typed("w", desc, zero, Limits())


@pytest.mark.parametrize("encoding", ANALYSED)
def test_non_finite_stored_values_are_refused_by_decode_and_decode_typed(weights, encoding):
    e = ENCODINGS[encoding]
    desc, sections = _encoded(weights, encoding)
    plain = [s for s in e.sections if s.length][0]  # the stored values (a quantised tensor's scales)
    key = "w" + plain.suffix
    vals = np.frombuffer(sections[key], np.dtype(desc["dtype"])).copy()
    vals[0] = np.nan
    bad = {**sections, key: memoryview(vals.tobytes())}
    for fn in (decode_tensor, decode_typed):
        with pytest.raises(InvalidValue, match="'w'"):
            fn("w", desc, bad, Limits())


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_codebooks_of_more_than_255_values_use_16_bit_indices(weights, layout):
    w = weights["fc2.trained"]
    centroids, labels = kmeans_1d(w.reshape(-1), 1000, iters=10)
    shared = (centroids[labels].reshape(w.shape) * (np.abs(w) > 0.02)).astype(np.float32)
    enc = encode_tensor("w", shared, TensorCoding(max_codebook=1000, layout=layout))
    assert enc.descriptor["enc"] == "codebook" and enc.descriptor["k"] > 255
    typed = decode_typed("w", enc.descriptor, _views(enc.sections), Limits())
    assert typed.indices.dtype == np.uint16
    assert np.array_equal(typed.to_dense(), decode_tensor("w", enc.descriptor, _views(enc.sections), Limits()))
    assert np.array_equal(typed.csr().to_dense(), shared)
