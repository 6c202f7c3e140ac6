"""``export --compact``: the ONNX file keeps the stored form of the weights (byte codebook indices
with Gather, uniform grids through DequantizeLinear, pruned tensors as byte gaps and
ScatterElements), stays a small multiple of the .dsz, and onnxruntime predicts as with the
dense export, on real Fashion-MNIST images."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.cli import main
from deepshrink.errors import ConfigError
from deepshrink.export import to_onnx
from deepshrink.export.dense import typed_tensors
from deepshrink.graph import trace
from deepshrink.pipeline.pack import pack_model
from deepshrink.storage import CodebookTensor, DenseTensor, SparseCodebookTensor, SparseTensor, TensorCoding
from deepshrink.storage.tensors import relative_gaps, uniform_grid

# no retraining: the export only needs the structure (pruned, shared, factorised) of real weights
QUICK_DC = """
name = "quick-dc"
[[stages]]
kind = "prune"
steps = 1
[stages.retrain]
epochs = 0
[stages.layers]
_linear = { sparsity = 0.92 }
_last = { sparsity = 0.75 }
[[stages]]
kind = "share"
[stages.finetune]
epochs = 0
[stages.layers]
_default = { bits = 5 }
[[stages]]
kind = "code"
coder = "huffman"
"""

QUICK_CHAIN = """
name = "quick-chain"
[[stages]]
kind = "lowrank"
method = "slr"
[stages.finetune]
epochs = 0
[stages.layers]
_linear = { rank = 0.2, reduced_rank = 0.5, unimportant = 0.5 }
_last = { skip = true }
[[stages]]
kind = "share"
[stages.finetune]
epochs = 0
[stages.layers]
_linear = { bits = 5 }
[[stages]]
kind = "code"
coder = "huffman"
"""


@pytest.fixture(scope="module")
def trained(fashion_small):
    torch.manual_seed(0)
    model = ds.build_model("lenet-300-100")
    ds.fit(model, fashion_small.tensors("train"), fashion_small.tensors("val"), ds.TrainConfig(epochs=1, seed=0),
           progress=False)
    return model


def _compress(trained, data, text, tmp_path_factory, name):
    recipe = tmp_path_factory.mktemp("recipe") / f"{name}.toml"
    recipe.write_text(text)
    result = ds.compress(trained, data, ds.load_recipe(recipe), progress=False)
    path = tmp_path_factory.mktemp("dsz") / f"{name}.dsz"
    path.write_bytes(result.data)
    return path, result


@pytest.fixture(scope="module")
def deep_compressed(trained, fashion_small, tmp_path_factory):
    """A Deep-Compression file (pruned, 5-bit codebooks, Huffman) of a real trained network."""
    return _compress(trained, fashion_small, QUICK_DC, tmp_path_factory, "dc")


@pytest.fixture(scope="module")
def test_images(fashion_small):
    x, _ = fashion_small.tensors("test")
    return x[:500].numpy()


def _run(path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def _exports(dsz, tmp_path, **kw):
    dense = ds.export(dsz, tmp_path / "dense.onnx", **kw)
    compact = ds.export(dsz, tmp_path / "compact.onnx", compact=True, **kw)
    assert compact["compact"] is True and dense["compact"] is False
    for out in (dense, compact):
        assert out["dsz_bytes"] == dsz.stat().st_size and out["ratio_to_dsz"] == out["bytes"] / out["dsz_bytes"]
        assert out["argmax_agreement"] in (None, 1.0) and out["max_abs_diff"] < 1e-4
    return dense, compact


def _same_predictions(tmp_path, x):
    """Identical argmax; scores within 1e-5 (and 1e-6 relative: onnxruntime leaves
    DequantizeLinear unfolded, and a Gemm on a computed weight rounds a little differently from
    one on a prepacked initializer, e.g. 21.70621 against 21.70620)."""
    dense, compact = _run(tmp_path / "dense.onnx", x), _run(tmp_path / "compact.onnx", x)
    np.testing.assert_array_equal(compact.argmax(1), dense.argmax(1))
    np.testing.assert_allclose(compact, dense, rtol=1e-6, atol=1e-5)


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _inits(path) -> dict[str, np.ndarray]:
    return {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def test_deep_compression_file_stays_a_few_times_the_dsz(deep_compressed, test_images, tmp_path):
    dsz, result = deep_compressed
    dense, compact = _exports(dsz, tmp_path)
    assert compact["ratio_to_dsz"] < 3 < 10 < dense["ratio_to_dsz"]
    _same_predictions(tmp_path, test_images)
    # the file's own network agrees too, on the same real images
    with torch.no_grad():
        want = ds.load(dsz)(torch.from_numpy(test_images)).numpy()
    np.testing.assert_allclose(_run(tmp_path / "compact.onnx", test_images), want, rtol=0, atol=1e-5)
    ops = _ops(tmp_path / "compact.onnx")
    assert ops.count("ScatterElements") == ops.count("CumSum") == 3 and ops.count("Gemm") == 3
    inits = _inits(tmp_path / "compact.onnx")
    assert inits["fc1.weight/gaps"].dtype == inits["fc1.weight/indices"].dtype == np.uint8
    assert max(v.size for v in inits.values() if v.dtype == np.float32) <= 300  # no dense weight matrix
    typed = typed_tensors(dsz)
    assert all(isinstance(typed[f"fc{i}.weight"], SparseCodebookTensor) for i in (1, 2, 3))


def test_a_codebook_tensor_is_a_gather_of_byte_indices(deep_compressed, test_images, tmp_path):
    source, result = deep_compressed
    dsz = tmp_path / "dense-layout.dsz"
    ds.save_model(result.model, dsz, ds.load(source).input_spec, coding=_dense_weights)
    typed = typed_tensors(dsz)
    assert isinstance(typed["fc1.weight"], CodebookTensor) and isinstance(typed["fc1.bias"], DenseTensor)
    _exports(dsz, tmp_path)
    _same_predictions(tmp_path, test_images)
    ops = _ops(tmp_path / "compact.onnx")
    assert ops.count("Gather") == 3 and "ScatterElements" not in ops and "DequantizeLinear" not in ops
    inits = _inits(tmp_path / "compact.onnx")
    assert inits["fc1.weight/indices"].dtype == np.uint8 and inits["fc1.weight/indices"].shape == (300, 784)
    assert inits["fc1.weight/table"].shape == (len(typed["fc1.weight"].codebook) + 1,)
    assert inits["fc1.weight/table"][-1] == 0
    np.testing.assert_array_equal(inits["fc1.bias"], typed["fc1.bias"].values)  # raw float32: as it is


def _dense_weights(name, array, op, role) -> TensorCoding:
    """Layer weights as codebook/dense (one symbol per element); the rest raw."""
    return TensorCoding(layout="dense") if role == "weight" else TensorCoding(compress=False)


def _spec() -> ds.InputSpec:
    return ds.InputSpec((1, 28, 28), "uint8", 1 / 255, (0.2860,), (0.3530,))


def _on_grid(model: nn.Module, levels: int, zero: int) -> nn.Module:
    """``model`` with every linear weight rounded to ``scale * (q - zero)``, q in 0..levels-1."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                w = m.weight.numpy()
                scale = np.float32(np.abs(w).max() / max(zero, levels - 1 - zero))
                q = np.clip(np.rint(w / scale) + zero, 0, levels - 1)
                m.weight.copy_(torch.from_numpy((q - zero).astype(np.float32) * scale))
    return model


@pytest.mark.parametrize("levels, zero, qtype", [(255, 127, np.int8), (256, 40, np.uint8)])
def test_a_uniform_grid_goes_through_dequantize_linear(trained, test_images, tmp_path, levels, zero, qtype):
    model = _on_grid(copy.deepcopy(trained), levels, zero)
    data, _ = pack_model(model, _spec(), coding=_dense_weights)
    dsz = tmp_path / "grid.dsz"
    dsz.write_bytes(data)
    typed = typed_tensors(dsz)
    assert isinstance(typed["fc1.weight"], CodebookTensor)
    _exports(dsz, tmp_path)
    _same_predictions(tmp_path, test_images)
    ops = _ops(tmp_path / "compact.onnx")
    assert ops.count("DequantizeLinear") == 3 and "Gather" not in ops
    inits = _inits(tmp_path / "compact.onnx")
    assert inits["fc1.weight/q"].dtype == qtype and inits["fc1.weight/q"].shape == (300, 784)




def test_uniform_grid_is_exact_or_none():
    scale = np.float32(0.0123)
    q = np.arange(-127, 128)
    table = np.append((q[q != 0]).astype(np.float32) * scale, np.float32(0))
    got = uniform_grid(table)
    assert got is not None and got[0].dtype == np.int8 and got[2] == 0
    np.testing.assert_array_equal(got[0].astype(np.float32) * got[1], table)
    shifted = np.append(np.arange(-3, 200)[np.arange(-3, 200) != 0].astype(np.float32) * scale, np.float32(0))
    q8, s8, z8 = uniform_grid(shifted)
    assert q8.dtype == np.uint8 and z8 == 3
    np.testing.assert_array_equal((q8.astype(np.int32) - int(z8)).astype(np.float32) * s8, shifted)
    assert uniform_grid(np.array([0.1, 0.25, -0.7, 0.0], np.float32)) is not None  # 2, 5, -14 times 0.05
    assert uniform_grid(np.array([0.1234567, 0.3141592, -0.7071067, 0.0], np.float32)) is None  # k-means centroids
    assert uniform_grid(np.array([0.0], np.float32)) is None
    assert uniform_grid(np.append(np.arange(1, 300).astype(np.float32) * scale, 0)) is None  # wider than a byte


def test_relative_gaps_sum_to_the_positions_with_fillers_for_long_gaps():
    positions = np.array([0, 1, 255, 256, 1000, 1001, 5000], dtype=np.int64)
    for dtype in (np.uint8, np.uint16):
        gaps, real = relative_gaps(positions, np.dtype(dtype))
        assert gaps.dtype == dtype and real.sum() == len(positions)
        summed = np.cumsum(gaps.astype(np.int64))
        np.testing.assert_array_equal(summed[real], positions)
        assert len(set(summed.tolist())) == len(summed)  # fillers land between entries, never on one
    assert relative_gaps(np.array([700], dtype=np.int64))[0].tolist() == [255, 255, 190]
    assert relative_gaps(np.array([70000], dtype=np.int64), np.dtype(np.uint16))[0].tolist() == [65535, 4465]
    assert relative_gaps(np.zeros(0, dtype=np.int64))[0].size == 0


def test_typed_tensors_given_to_to_onnx_directly():
    """Long gaps (fillers), an empty tensor, float16-exact values, a codebook of uint16 indices."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2000, 64), nn.ReLU(), nn.Linear(64, 4), nn.ReLU(), nn.Linear(4, 3)).eval()
    rng = np.random.default_rng(0)
    pos = np.sort(rng.choice(128_000, 40, replace=False))  # 0.03% dense: most gaps need fillers
    book = rng.standard_normal(300).astype(np.float32)  # K + 1 > 256 symbols: uint16 indices
    compact = {
        "0.weight": SparseTensor((64, 2000), pos, rng.standard_normal(40).astype(np.float32)),
        "0.bias": DenseTensor(rng.standard_normal(64).astype(np.float16).astype(np.float32)),
        "2.weight": CodebookTensor(rng.integers(0, 301, (4, 64)).astype(np.uint16), book),
        "2.bias": SparseTensor((4,), np.zeros(0, np.int64), np.zeros(0, np.float32)),
        "4.weight": SparseCodebookTensor((3, 4), np.array([1, 5, 10], np.int64), np.array([0, 2, 1], np.uint8),
                                         np.array([-0.5123, 0.2571, 1.5313], np.float32)),
    }
    with torch.no_grad():
        for name, typed in compact.items():
            model.get_parameter(name).copy_(torch.from_numpy(typed.to_dense()))
    proto = to_onnx(trace(model), model.state_dict(), [2000], compact=compact)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    assert inits["0.bias/float16"].dtype == np.float16 and inits["2.weight/indices"].dtype == np.uint16
    assert inits["0.weight/gaps"].dtype == np.uint16  # fewer bytes than uint8 gaps and their fillers
    assert inits["4.weight/indices"].shape == (3, 4)  # 12 weights: dense bytes beat gaps and scatter nodes
    assert "4.bias" in inits  # not given in compact form: dense, as without compact
    x = rng.standard_normal((5, 2000)).astype(np.float32)
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)
    assert inits["0.weight/gaps"].size == 40 and inits["0.weight/values"].size == 40  # no fillers, no dense copy
    with pytest.raises(ds.DeepshrinkError, match=r"compact tensor '0.bias' has shape \(3,\)"):
        to_onnx(trace(model), model.state_dict(), [2000], compact={"0.bias": DenseTensor(np.zeros(3, np.float32))})


def test_a_pruned_unshared_layer_is_float_sparse(trained, test_images, tmp_path):
    model = copy.deepcopy(trained)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                w = m.weight
                w.mul_(w.abs() > w.abs().flatten().quantile(0.9))
    data, _ = pack_model(model, _spec(), coding=lambda name, array, op, role:
                         TensorCoding(layout="sparse", max_codebook=16) if role == "weight"
                         else TensorCoding(compress=False))
    dsz = tmp_path / "float-sparse.dsz"
    dsz.write_bytes(data)
    assert isinstance(typed_tensors(dsz)["fc1.weight"], SparseTensor)
    dense, compact = _exports(dsz, tmp_path)
    _same_predictions(tmp_path, test_images)
    # 10% of the weights as a byte gap and a float32 value: about 5/40 of the dense size
    assert compact["bytes"] < 0.2 * dense["bytes"]
    assert _inits(tmp_path / "compact.onnx")["fc1.weight/values"].dtype == np.float32


def test_a_low_rank_chain_exports_its_factors(trained, fashion_small, test_images, tmp_path, tmp_path_factory):
    dsz, _ = _compress(trained, fashion_small, QUICK_CHAIN, tmp_path_factory, "chain")
    dense, compact = _exports(dsz, tmp_path)
    _same_predictions(tmp_path, test_images)
    assert compact["bytes"] < dense["bytes"] / 3 and compact["ratio_to_dsz"] < 3
    ops = _ops(tmp_path / "compact.onnx")
    assert ops.count("Gemm") == 5  # fc1 and fc2 as two factors each, fc3 whole


def test_a_weight_shared_by_many_nodes_is_written_once(tmp_path):
    class Reuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 64)

        def forward(self, x):
            for _ in range(20):
                x = torch.tanh(self.fc(x))
            return x

    torch.manual_seed(0)
    model = Reuse().eval()
    with torch.no_grad():
        book = torch.linspace(-0.3, 0.3, 15)
        model.fc.weight.copy_(book[torch.randint(0, 15, (64, 64))] * (torch.rand(64, 64) < 0.2))
    data, _ = pack_model(model, ds.InputSpec((64,), "float32", 1.0, (0.0,), (1.0,)))
    dsz = tmp_path / "reuse.dsz"
    dsz.write_bytes(data)
    _exports(dsz, tmp_path)
    ops = _ops(tmp_path / "compact.onnx")
    assert ops.count("Gemm") == 20 and ops.count("ScatterElements") == ops.count("Gather") == 1
    names = [i.name for i in onnx.load(str(tmp_path / "compact.onnx")).graph.initializer]
    assert len(names) == len(set(names))


VOCAB = 60


class Encoder(nn.Module):
    """Token ids and a mask; a linear layer over every token (a transposed weight in ONNX)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        self.mix = nn.Linear(16, 16)
        self.proj = nn.Linear(16, 6)

    def forward(self, input_ids, attention_mask):
        x = torch.relu(self.mix(self.emb(input_ids)))
        w = attention_mask.unsqueeze(-1).float()
        return self.proj((x * w).sum(1) / torch.clamp(w.sum(1), min=1e-9))


def _tokens(n=6, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, length), generator=g)
    mask = (torch.arange(length)[None] < torch.randint(1, length + 1, (n, 1), generator=g)).long()
    return ids * mask, mask


def test_a_network_of_int64_inputs_exports_compact(tmp_path):
    torch.manual_seed(0)
    model = Encoder().eval()
    with torch.no_grad():  # shared values, some pruned: a codebook embedding table and layers
        for m in (model.emb, model.mix, model.proj):
            book = torch.linspace(-1, 1, 12)
            m.weight.copy_(book[torch.randint(0, 12, m.weight.shape)] * (torch.rand(m.weight.shape) < 0.6))
    data, _ = pack_model(model, None, probe=_tokens(), meta={"objective": "match-embeddings"})
    dsz = tmp_path / "enc.dsz"
    dsz.write_bytes(data)
    dense, compact = _exports(dsz, tmp_path, inputs=_tokens(9, seed=1))
    assert compact["argmax_agreement"] is None and compact["max_abs_diff"] < 1e-5
    ids, mask = (t.numpy() for t in _tokens(9, seed=2))
    got = [ort.InferenceSession(str(tmp_path / f"{k}.onnx"), providers=["CPUExecutionProvider"])
           .run(None, {"input_ids": ids, "attention_mask": mask})[0] for k in ("dense", "compact")]
    np.testing.assert_allclose(got[1], got[0], rtol=0, atol=1e-5)
    ops = _ops(tmp_path / "compact.onnx")
    assert "Transpose" in ops and "MatMul" in ops  # mix runs over every token: x @ W^T of the compact W


def test_cli_compact_flag(deep_compressed, tmp_path, capsys):
    dsz, _ = deep_compressed

    def cli(*argv):
        code = main([*argv, "--json", "--no-progress"])
        lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
        assert len(lines) == 1
        return code, json.loads(lines[0])

    code, out = cli("export", str(dsz), "-o", str(tmp_path / "m.onnx"), "--compact", "--with-preprocessing")
    assert code == 0 and out["compact"] is True and out["preprocessing"] is True
    assert out["bytes"] == (tmp_path / "m.onnx").stat().st_size and out["dsz_bytes"] == dsz.stat().st_size
    assert out["ratio_to_dsz"] == pytest.approx(out["bytes"] / out["dsz_bytes"]) and out["argmax_agreement"] == 1.0
    code, out = cli("export", str(dsz), "-o", str(tmp_path / "m.safetensors"), "--compact")
    assert code == 2 and out["type"] == "ConfigError" and "compact needs the ONNX format" in out["error"]
    assert not (tmp_path / "m.safetensors").exists()
    with pytest.raises(ConfigError, match="compact needs the ONNX format, got 'safetensors'"):
        ds.export(dsz, tmp_path / "m.onnx", "safetensors", compact=True)
    # without --json: one line with the bytes and the ratio to the .dsz
    assert main(["export", str(dsz), "-o", str(tmp_path / "t.onnx"), "--compact", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "× the .dsz" in text and "compact" in text


def test_every_op_of_the_allow_list_exports_compact(tmp_path):
    """Convolutions (grouped, dilated), batch norms and linear layers over a feature map, with
    pruned shared weights: the compact export agrees with PyTorch as the dense one does."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_export import everything_model

    model = everything_model()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight
                book = torch.quantile(w.flatten(), torch.linspace(0.02, 0.98, 14))
                shared = book[(w[..., None] - book).abs().argmin(-1)]
                w.copy_(shared * (w.abs() > w.abs().flatten().quantile(0.8)))
    data, _ = pack_model(model, ds.InputSpec((1, 28, 28), "float32", 1.0, (0.0,), (1.0,)))
    dsz = tmp_path / "every.dsz"
    dsz.write_bytes(data)
    kinds = {type(t).__name__ for t in typed_tensors(dsz).values()}
    assert {"SparseCodebookTensor", "DenseTensor"} <= kinds
    dense, compact = _exports(dsz, tmp_path)
    assert compact["max_abs_diff"] < 1e-5 and compact["bytes"] < dense["bytes"]
    x = np.random.default_rng(0).standard_normal((16, 1, 28, 28)).astype(np.float32)
    _same_predictions(tmp_path, x)
    assert {"Conv", "BatchNormalization", "ScatterElements"} <= set(_ops(tmp_path / "compact.onnx"))
