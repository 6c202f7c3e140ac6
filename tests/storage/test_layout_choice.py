"""encode_tensor chooses layout and gap width from histograms, and codes only its choice."""

from __future__ import annotations

import numpy as np
import pytest

from deepshrink.coding import Coder
from deepshrink.storage import EncodedTensor, TensorCoding, decode_tensor, encode_tensor
from deepshrink.storage import encodings, tensor_codec
from deepshrink.storage.tensor_codec import AUTO_GAP_BITS
from deepshrink.util.limits import Limits


def _tensor(numel: int, density: float, seed: int, k: int | None = 31) -> np.ndarray:
    """``numel`` weights, ``density`` of them nonzero: ``k`` shared values (None: all distinct)."""
    rng = np.random.default_rng(seed)
    if k is None:
        values = rng.standard_normal(numel).astype(np.float32)
    else:
        values = np.sort(rng.standard_normal(k)).astype(np.float32)[rng.binomial(k - 1, 0.5, numel)]
    return (values * (rng.random(numel) < density)).astype(np.float32)


def _symbols(enc: EncodedTensor) -> int:
    d = enc.descriptor
    return sum(d[s]["n"] for s in ("sym", "gap") if s in d)


def _cost(enc: EncodedTensor) -> float:
    return 8 * enc.nbytes + tensor_codec.SYMBOL_COST_BITS * _symbols(enc)


def _trial(array: np.ndarray, coding: TensorCoding) -> list[EncodedTensor]:
    """Every candidate ``coding`` allows, really encoded (the old way of choosing)."""
    out = [encode_tensor("w", array, TensorCoding(compress=False))]
    widths = AUTO_GAP_BITS if coding.gap_bits is None else (coding.gap_bits,)
    out += [encode_tensor("w", array, TensorCoding(coder=coding.coder, gap_bits=g, layout="sparse")) for g in widths]
    dense = encode_tensor("w", array, TensorCoding(coder=coding.coder, layout="dense"))
    if dense.descriptor["enc"] == "codebook":
        out.append(dense)
    return out


CASES = [(density, k) for density in (0.0, 0.003, 0.03, 0.08, 0.2, 0.5, 0.95) for k in (31, None)]


@pytest.mark.parametrize("coder", list(Coder))
@pytest.mark.parametrize("gap_bits", [None, 5])
@pytest.mark.parametrize("density,k", CASES)
@pytest.mark.parametrize("weigh_symbols", [True, False])
def test_histogram_choice_is_as_good_as_trial_encoding(coder, gap_bits, density, k, weigh_symbols, monkeypatch):
    if not weigh_symbols:
        monkeypatch.setattr(tensor_codec, "SYMBOL_COST_BITS", 0.0)  # bytes alone
    array = _tensor(20_000, density, seed=int(density * 1000), k=k)
    coding = TensorCoding(coder=coder, gap_bits=gap_bits)
    chosen = encode_tensor("w", array, coding)
    best = min(_cost(c) for c in _trial(array, coding))
    assert _cost(chosen) <= best * 1.005 + 8 * 8  # within 0.5% or 8 bytes
    out = decode_tensor("w", chosen.descriptor, {n: memoryview(v) for n, v in chosen.sections.items()}, Limits())
    assert np.array_equal(out, array)


def test_sparse_is_kept_when_dense_saves_a_negligible_fraction():
    """ANS codes the dense and the sparse layout of an 8%-dense tensor to almost the same size
    (dense a hair smaller), but dense decodes ~6x the symbols: choose sparse."""
    array = _tensor(200_000, 0.08, seed=1)
    coding = TensorCoding(coder=Coder.ANS, gap_bits=None)
    dense = encode_tensor("w", array, TensorCoding(coder=Coder.ANS, layout="dense"))
    chosen = encode_tensor("w", array, coding)
    assert chosen.descriptor["layout"] == "sparse"
    assert dense.nbytes <= chosen.nbytes <= dense.nbytes * 1.02
    assert _symbols(dense) > 5 * _symbols(chosen)


def test_dense_is_chosen_when_it_decodes_fewer_symbols_or_saves_much():
    for coder in (Coder.HUFFMAN, Coder.ANS):
        chosen = encode_tensor("w", _tensor(50_000, 0.9, seed=2), TensorCoding(coder=coder))
        assert chosen.descriptor["layout"] == "dense"


def test_only_the_chosen_candidate_is_coded(monkeypatch):
    coded = []
    real = encodings.encode_stream

    def spy(symbols, alphabet, coder, bits=None):
        coded.append(len(symbols))
        return real(symbols, alphabet, coder, bits=bits)

    monkeypatch.setattr(encodings, "encode_stream", spy)
    chosen = encode_tensor("w", _tensor(100_000, 0.05, seed=3), TensorCoding(gap_bits=None))
    assert chosen.descriptor["layout"] == "sparse"
    assert coded == [chosen.descriptor["gap"]["n"], chosen.descriptor["sym"]["n"]]  # one gap and one symbol stream
