"""The ``grid/dense`` layout: quantised weights (int8, int4, int2, binary, ternary; per tensor,
per channel, per group; symmetric or with zero points) kept by the C engine as their bit-packed
integers, with per-group scales: bit-exact views and decoders, kernels that agree with numpy and
PyTorch, and files whose engine flash is close to the file's size."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.engine.export import export_c
from deepshrink.engine.layout import pack
from deepshrink.pipeline.pack import default_coding
from deepshrink.quant.encoding import QuantTensor
from deepshrink.storage import TensorCoding
from deepshrink.storage.tensors import DenseTensor, _rows_cols

sys.path.insert(0, str(Path(__file__).parent))
from helpers import need_cc, random_quant  # noqa: E402

# (levels, bits, granularity, symmetric)
CASES = [("int", 8, "channel", True), ("int", 4, "group", False), ("int", 2, "tensor", True),
         ("binary", 1, "channel", True), ("ternary", 2, "tensor", True), ("int", 5, "group", True)]


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def quantise(w: np.ndarray, levels: str, bits: int) -> QuantTensor:
    """Per-output-channel quantisation of ``w`` (symmetric int, binary ±mean|w|, ternary TWN)."""
    rows, cols = _rows_cols(w.shape)
    flat = w.reshape(rows, cols).astype(np.float32)
    a = np.abs(flat)
    if levels == "binary":
        scale, q = a.mean(1), (flat > 0)
    elif levels == "ternary":
        t = 0.7 * a.mean(1, keepdims=True)
        scale = np.array([a[r][a[r] > t[r]].mean() if (a[r] > t[r]).any() else 1.0 for r in range(rows)])
        q = np.sign(flat) * (a > t) + 1
    else:
        top = (1 << (bits - 1)) - 1
        scale = np.maximum(a.max(1), 1e-8) / top
        q = np.clip(np.rint(flat / scale[:, None]), -top, top) + (1 << (bits - 1))
    return QuantTensor(q.astype(np.uint8).reshape(w.shape), bits, levels, cols, scale.astype(np.float32))


@pytest.mark.parametrize("levels,bits,granularity,symmetric", CASES)
def test_grid_view_and_layout_are_bit_exact(lib, levels, bits, granularity, symmetric):
    t = random_quant((12, 40), levels, bits, granularity, symmetric)
    want = _bits(t.to_dense())
    g = t.grid()
    assert g is not None and g.bits == bits and np.array_equal(_bits(g.to_dense()), want)
    p = pack(t)
    assert p.kind == "grid/dense" and p.value_bits == bits
    assert p.nbytes == (t.numel * bits + 7) // 8 + 8 + 8 * t.n_groups  # the integers at their width, scale + offset
    p.check()
    assert np.array_equal(_bits(p.to_dense()), want)
    assert np.array_equal(_bits(lib.to_dense(p)), want)  # the C decoder (ds_next)


@pytest.mark.parametrize("levels,bits,granularity,symmetric", CASES)
def test_linear_and_conv_kernels_agree_with_pytorch(lib, levels, bits, granularity, symmetric):
    rng = np.random.default_rng(1)
    t = random_quant((16, 3, 3, 3), levels, bits, granularity, symmetric, group_size=9)
    p = pack(t)
    assert p.kind == "grid/dense"
    w = torch.from_numpy(t.to_dense())
    bias = rng.standard_normal(16).astype(np.float32)
    for n in (1, 2, 5):  # one sample (the grid kernel), the chunked decoder, the transposed batch
        x = rng.standard_normal((n, 27)).astype(np.float32)
        want = torch.nn.functional.linear(torch.from_numpy(x), w.reshape(16, 27), torch.from_numpy(bias)).numpy()
        np.testing.assert_allclose(lib.linear(p, x, bias), want, rtol=1e-5, atol=1e-5)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), w, torch.from_numpy(bias), padding=1).numpy()
    np.testing.assert_allclose(lib.conv2d(p, x, bias, (1, 1), (1, 1), (1, 1), 1), want, rtol=1e-5, atol=1e-5)


def test_the_smallest_layout_still_wins():
    """A mostly-zero ternary tensor is no grid in the engine when gaps and floats take fewer bytes;
    a tensor without a grid view never gets one; asking for grid/dense without a grid is refused."""
    q = np.ones((8, 4000), np.uint8)
    q[:, ::400] = 2  # 10 nonzeros a row of 4000
    sparse = QuantTensor(q, 2, "ternary", 4000, np.full(8, 0.5, np.float32))
    assert pack(sparse).kind == "float/sparse"
    assert pack(sparse, "grid/dense").kind == "grid/dense"
    dense = DenseTensor(np.ones((4, 4), np.float32))
    assert dense.grid() is None and pack(dense).kind == "dense"
    with pytest.raises(ValueError, match="grid/dense"):
        pack(dense, "grid/dense")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc1 = nn.Linear(4 * 28 * 28, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.relu(self.conv(x)).flatten(1))))


@pytest.fixture(scope="module")
def quant_files(fashion_small, tmp_path_factory):
    """A small conv + MLP network with every weight quantised per channel, as .dsz files (the
    quant encoding, fixed-width codes: int4 costs n/2 bytes)."""
    from deepshrink.coding import Coder

    folder = tmp_path_factory.mktemp("quant")
    out = {}
    for levels, bits in (("int", 8), ("int", 4), ("binary", 1), ("ternary", 2)):
        torch.manual_seed(0)
        model = Net().eval()
        forms = {}
        with torch.no_grad():
            for name, m in model.named_modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    form = quantise(m.weight.numpy(), levels, bits)
                    m.weight.copy_(torch.from_numpy(form.to_dense()))
                    forms[f"{name}.weight"] = form

        def coding(name, tensor, op, role, forms=forms):
            if name in forms:
                return TensorCoding(coder=Coder.FIXED, form=forms[name])
            return default_coding(name, tensor, op, role)

        path = folder / f"{levels}{bits}.dsz"
        ds.save_model(model, path, fashion_small.input_spec, coding=coding)
        out[f"{levels}{bits}"] = path
    return out


@pytest.mark.parametrize("which", ["int8", "int4", "binary1", "ternary2"])
def test_engine_flash_is_close_to_the_file(quant_files, fashion_small, tmp_path, which):
    need_cc()
    path = quant_files[which]
    raw = fashion_small.x_test[:16]
    res = export_c(path, tmp_path / "engine", inputs=raw)
    assert res["checked"] and res["argmax_agreement"] == 1.0 and res["max_abs_diff"] < 1e-4
    src = (tmp_path / "engine" / "model.c").read_text()
    assert src.count("grid/dense") == 3 and ".kind = DS_GRID" in src
    assert res["weight_bytes"] <= 1.3 * res["dsz_bytes"]  # was ~4x: every weight a float32
    bits = {"int8": 8, "int4": 4, "binary1": 1, "ternary2": 2}[which]
    assert res["weight_bytes"] < (4 * 28 * 28 * 64) * bits / 8 + 4096  # fc1's integers dominate, at their width


def test_engine_and_native_runtimes_run_quantised_files(quant_files, fashion_small):
    need_cc()
    path = quant_files["int4"]
    dense = ds.load(path)
    x = dense.input_spec.apply(fashion_small.x_test[:8])
    with torch.no_grad():
        want = dense(x)
        engine = ds.load(path, mode="engine")
        assert np.array_equal(engine.predict(fashion_small.x_test[:8]), dense.predict(fashion_small.x_test[:8]))
        torch.testing.assert_close(engine(x), want, rtol=1e-4, atol=1e-4)
        native = ds.load(path, mode="compressed", kernels="native")
        assert {k["kernel_batch1"] for k in native.kernels} == {"native"}
        for batch in (1, 8):
            torch.testing.assert_close(native(x[:batch]), want[:batch], rtol=1e-4, atol=1e-4)
