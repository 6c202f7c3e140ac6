
import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.data import InputSpec
from deepshrink.errors import ConfigError
from deepshrink.lowrank import factorize_linear, resolve_rank, truncated_svd


def planted(m, n, r, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, r, generator=g, dtype=torch.float64) @ torch.randn(r, n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("m, n, r", [(50, 30, 5), (30, 80, 1), (64, 64, 64)])
def test_planted_rank_is_recovered(m, n, r):
    w = planted(m, n, r)
    a, b = truncated_svd(w, r)
    assert a.shape == (m, r) and b.shape == (r, n)
    assert torch.linalg.norm(a @ b - w) / torch.linalg.norm(w) < 1e-10
    if r < min(m, n):  # a lower rank cannot represent it
        a, b = truncated_svd(w, r - 1) if r > 1 else (None, None)
        if a is not None:
            assert torch.linalg.norm(a @ b - w) / torch.linalg.norm(w) > 1e-3


def test_factorised_layer_matches_the_reconstructed_dense_layer():
    torch.manual_seed(0)
    layer = nn.Linear(40, 20)
    with torch.no_grad():
        layer.weight.copy_(planted(20, 40, 6).float())
    fac = factorize_linear(layer, rank=6)
    x = torch.randn(8, 40)
    with torch.no_grad():
        torch.testing.assert_close(fac(x), layer(x), rtol=1e-4, atol=1e-4)
    assert fac.first.weight.shape == (6, 40) and fac.second.weight.shape == (20, 6)
    assert sum(p.numel() for p in fac.parameters()) == 6 * 60 + 20


def test_rank_rule():
    assert resolve_rank(7, (100, 50)) == 7
    assert resolve_rank(500, (100, 50)) == 50
    assert resolve_rank(0.5, (100, 50)) == 16  # 16 * 150 <= 0.5 * 5000
    s = torch.tensor([10.0, 1.0, 0.1, 0.01])
    assert resolve_rank(1, (4, 4), s, energy=0.99) == 1
    assert resolve_rank(1, (4, 4), s, energy=0.9999) == 2
    for bad in (0, -3, 1.5, 0.0, "half", True):
        with pytest.raises(ConfigError):
            resolve_rank(bad, (10, 10))


def test_factorised_model_stores_loads_and_exports_as_two_small_layers(tmp_path):
    model = ds.build_model("lenet-300-100")
    model.fc1 = factorize_linear(model.fc1, rank=0.25)
    spec = InputSpec((1, 28, 28), "uint8", 1 / 255, (0.0,), (1.0,))
    path = tmp_path / "lr.dsz"
    ds.save_model(model, path, spec)
    loaded = ds.load(path)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    out = ds.export(path, tmp_path / "lr.onnx")
    assert out["argmax_agreement"] == 1.0
    import onnx

    gemms = [n for n in onnx.load(str(tmp_path / "lr.onnx")).graph.node if n.op_type == "Gemm"]
    assert len(gemms) == 4  # fc1 as two layers, then fc2, fc3
