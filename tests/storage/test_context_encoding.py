"""The ``codebook/context`` encoding: chosen under ``coder = "context"`` when smaller, bit-exact
round trips of every shape, hostile descriptors, and a compressed file read by deepshrink.load."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import deepshrink as ds
from deepshrink.coding import Coder
from deepshrink.errors import ConfigError, CorruptStream, FormatError, InvalidHeader
from deepshrink.fileformat.model_file import read_model_file
from deepshrink.storage import (
    ENCODINGS,
    SparseCodebookTensor,
    TensorCoding,
    check_descriptor,
    decode_tensor,
    decode_typed,
    encode_tensor,
)
from deepshrink.storage.context_encoding import candidate_grids
from deepshrink.storage.encodings import Prepared
from deepshrink.util.limits import Limits

CONTEXT = ENCODINGS["codebook/context"]


def _shared(shape, density: float, k: int = 31, seed: int = 0, half: bool = False) -> np.ndarray:
    """A pruned, shared tensor: ``k`` values of both signs at a random ``density``; rows keep a
    run of neighbouring columns, as pruned first layers do."""
    rng = np.random.default_rng(seed)
    book = np.sort(rng.standard_normal(k)).astype(np.float32) * np.float32(0.1)
    if half:
        book = book.astype(np.float16).astype(np.float32)
    book = book[book != 0]
    a = book[rng.integers(0, len(book), shape)] * (rng.random(shape) < density)
    return a.astype(np.float32)


def _views(enc):
    return {k: memoryview(v) for k, v in enc.sections.items()}


def _context(array: np.ndarray, grid=None):
    """Store ``array`` with codebook/context itself (not through the choice)."""
    return CONTEXT.encode("w", Prepared.of(array, 255), Coder.CONTEXT, 0, grid=grid)


@pytest.mark.parametrize("shape, density", [((0,), 0.5), ((0, 7), 0.5), ((1,), 1.0), ((1,), 0.0), ((1, 1), 1.0),
                                            ((40, 30), 0.0), ((40, 30), 1.0), ((12, 3, 5, 5), 0.3), ((300,), 0.2),
                                            ((6, 2, 3), 0.5), ((30, 64), 0.08)])
def test_round_trip_of_every_shape(shape, density):
    array = _shared(shape, density, seed=len(shape))
    enc = _context(array)
    assert enc.descriptor["layout"] == "context"
    sections = _views(enc)
    checked = check_descriptor("w", enc.descriptor, Limits())
    assert checked.encoding is CONTEXT
    out = decode_tensor("w", enc.descriptor, sections, Limits())
    assert out.shape == array.shape and np.array_equal(out.view(np.uint32), (array + np.float32(0)).view(np.uint32))
    typed = decode_typed("w", enc.descriptor, sections, Limits())
    assert isinstance(typed, SparseCodebookTensor) and typed.nnz == np.count_nonzero(array)
    assert np.array_equal(typed.to_dense(), out) and np.array_equal(typed.csr().to_dense().reshape(-1), out.reshape(-1))
    assert enc.report.nonzero == np.count_nonzero(array) and enc.report.total_bytes == enc.nbytes


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 20), cols=st.integers(1, 60), density=st.floats(0, 1), k=st.integers(1, 40),
       seed=st.integers(0, 1000), half=st.booleans())
def test_the_choice_is_the_smaller_and_exact(rows, cols, density, k, seed, half):
    array = _shared((rows, cols), density, k, seed, half)
    chosen = encode_tensor("w", array, TensorCoding(coder=Coder.CONTEXT, gap_bits=None))
    classic = encode_tensor("w", array, TensorCoding(coder=Coder.ANS, gap_bits=None))
    assert chosen.nbytes <= classic.nbytes
    if chosen.descriptor.get("layout") != "context":
        assert chosen.descriptor == classic.descriptor  # the classic layout, with ANS
    out = decode_tensor("w", chosen.descriptor, _views(chosen), Limits())
    assert np.array_equal(out, array)


def test_a_pruned_shared_layer_is_stored_with_context_and_smaller():
    array = _shared((300, 784), 0.08, seed=3)
    chosen = encode_tensor("w", array, TensorCoding(coder="context", gap_bits=None))
    huffman = encode_tensor("w", array, TensorCoding(coder="huffman", gap_bits=None))
    assert chosen.descriptor["layout"] == "context" and chosen.descriptor["grid"] in ([28, 28], [1, 784])
    assert chosen.nbytes < huffman.nbytes
    assert set(chosen.report.streams) == {"mask", "val"}
    assert chosen.report.index_bytes == len(chosen.sections["w:mask"])


def test_forms_raw_tensors_and_forced_layouts_keep_their_encodings_under_context():
    array = _shared((30, 40), 0.1)
    assert encode_tensor("b", array[0], TensorCoding(coder="context", compress=False)).descriptor["enc"] == "raw"
    sparse = encode_tensor("w", array, TensorCoding(coder="context", layout="sparse"))
    assert sparse.descriptor["layout"] == "sparse" and sparse.descriptor["sym"]["coder"] == "ans"
    floats = encode_tensor("w", np.random.default_rng(0).standard_normal((30, 40)).astype(np.float32) * (array != 0),
                           TensorCoding(coder="context", max_codebook=8))
    assert floats.descriptor["enc"] == "float" and floats.descriptor["gap"]["coder"] == "ans"


def test_grids_tried():
    assert candidate_grids((300, 784), None) == [None, (28, 28)]
    assert candidate_grids((500, 800), (4, 4)) == [None, (4, 4)]
    assert candidate_grids((50, 20, 5, 5), None) == [None, (5, 5)]
    assert candidate_grids((10,), None) == [None]
    with pytest.raises(ConfigError):
        candidate_grids((500, 800), (3, 3))
    for bad in ((0, 4), (4,), 16, (2.0, 8)):
        with pytest.raises(ConfigError, match="grid"):
            TensorCoding(coder="context", grid=bad)
    enc = _context(_shared((20, 800), 0.1), grid=(4, 4))
    assert enc.descriptor["grid"] in ([1, 800], [4, 4])


# ----------------------------------------------------------------------------------------------
# hostile descriptors and sections


@pytest.fixture(scope="module")
def stored():
    enc = _context(_shared((20, 49), 0.3, seed=5), grid=(7, 7))
    return enc.descriptor, _views(enc)


@pytest.mark.parametrize("grid", [[7], [0, 7], [7, -1], [3, 3], [7, 7, 1], "7x7", [True, 7], [50, 1]])
def test_a_bad_grid_is_named(stored, grid):
    desc, _ = stored
    with pytest.raises(InvalidHeader, match="grid"):
        check_descriptor("w", {**desc, "grid": grid}, Limits())


@pytest.mark.parametrize("stream", ["mask", "val"])
def test_streams_must_be_context_coded(stored, stream):
    desc, _ = stored
    bad = copy.deepcopy(desc)
    bad[stream]["coder"] = "ans"
    with pytest.raises(InvalidHeader, match="must be 'context'"):
        check_descriptor("w", bad, Limits())


def test_wrong_counts_and_codebook_sizes_are_typed_errors(stored):
    desc, sections = stored
    for change in ({"val": {**desc["val"], "n": desc["val"]["n"] - 1}},
                   {"val": {**desc["val"], "n": desc["val"]["n"] + 1}},
                   {"grid": [7, 7] if desc["grid"] == [1, 49] else [1, 49]}):  # other contexts: the check fails
        with pytest.raises(CorruptStream):
            decode_tensor("w", {**desc, **change}, sections, Limits())
    with pytest.raises(InvalidHeader, match="mask"):
        check_descriptor("w", {**desc, "mask": {**desc["mask"], "n": 5}}, Limits())
    with pytest.raises(InvalidHeader, match="need a codebook"):
        check_descriptor("w", {**desc, "k": 0, "val": {**desc["val"], "bits": 1}}, Limits())
    with pytest.raises(InvalidHeader, match="'w:cb'"):
        decode_tensor("w", {**desc, "k": desc["k"] - 1}, sections, Limits())


@pytest.mark.parametrize("section", [":mask", ":val"])
def test_truncated_extended_and_flipped_sections(stored, section):
    desc, sections = stored
    data = bytes(sections["w" + section])
    for bad in (data[:-1], data[: len(data) // 2], b"", data + b"\x00"):
        with pytest.raises(CorruptStream):
            decode_typed("w", desc, {**sections, "w" + section: memoryview(bad)}, Limits())
    rng = np.random.default_rng(0)
    for _ in range(20):  # a flip decodes to an error or to some tensor of the declared shape
        b = bytearray(data)
        b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        try:
            t = decode_typed("w", desc, {**sections, "w" + section: memoryview(bytes(b))}, Limits())
        except FormatError:
            continue
        assert t.shape == (20, 49) and t.nnz == desc["val"]["n"]


def test_a_classic_stream_claiming_the_context_coder_is_corrupt():
    enc = encode_tensor("w", _shared((20, 30), 0.1), TensorCoding(coder="ans", layout="sparse"))
    desc = copy.deepcopy(enc.descriptor)
    desc["gap"]["coder"] = "context"
    with pytest.raises(CorruptStream, match="codebook/context"):
        decode_tensor("w", desc, _views(enc), Limits())


# ----------------------------------------------------------------------------------------------
# a real compressed file


def test_compress_with_the_context_coder_and_load(fashion_small, tmp_path, make_recipe):
    torch.manual_seed(0)
    model = ds.build_model("lenet-300-100")
    ds.fit(model, fashion_small.tensors("train"), fashion_small.tensors("val"), ds.TrainConfig(epochs=1, seed=0),
           progress=False)
    result = ds.compress(model, fashion_small, make_recipe(finetune=0, coder="context", name="ctx"), progress=False)
    path = tmp_path / "m.dsz"
    path.write_bytes(result.data)
    encodings = {n: d.get("layout") for n, d in read_model_file(path).tensors_desc.items() if n.endswith("weight")}
    assert encodings["fc1.weight"] == "context"
    huffman = ds.pack_model(result.model, fashion_small.input_spec)[0]
    assert len(result.data) < len(huffman)
    test = fashion_small.tensors("test")
    for mode in ("dense", "compressed"):
        assert ds.evaluate(ds.load(path, mode=mode), test) == result.file_accuracy
    x = test[0][:8]
    with torch.no_grad():
        assert torch.equal(ds.load(path)(x), ds.load(huffman)(x))
    onnx = ds.export(path, tmp_path / "m.onnx", compact=True)  # the typed tensors write themselves
    assert onnx["max_abs_diff"] < 1e-4 and onnx["argmax_agreement"] in (None, 1.0)


def test_the_coder_indices_cover_every_codebook():
    from deepshrink.coding import context
    from deepshrink.storage.encodings import MAX_CODEBOOK

    assert context.MAX_K == MAX_CODEBOOK - 1
