"""The built-in low-rank recipes through the command line, end to end on small real subsets:
compress, then the file loads, evaluates, is inspected and exports to ONNX with the small layers."""

import json

import numpy as np
import onnx
import pytest
from safetensors.numpy import load_file

from deepshrink.cli import main


def run_cli(capsys, *argv):
    code = main([*argv, "--json", "--no-progress"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    return code, json.loads(lines[0])


@pytest.fixture(scope="module")
def weights(tmp_path_factory, fashion):
    d = tmp_path_factory.mktemp("w")
    out = {}
    for model in ("lenet-300-100", "lenet-5"):
        path = d / f"{model}.safetensors"
        assert main(["train", "--model", model, "--limit", "2000", "--epochs", "2", "-o", str(path), "--json",
                     "--no-progress"]) == 0
        out[model] = path
    return out


def compress_and_check(capsys, tmp_path, model, weights, recipe):
    dsz = tmp_path / f"{model}-{recipe}.dsz"
    code, out = run_cli(capsys, "compress", "--model", model, "--weights", str(weights), "--limit", "2000",
                        "--recipe", recipe, "-o", str(dsz))
    assert code == 0, out
    assert dsz.stat().st_size == out["file_bytes"] and out["final_test_accuracy"] > 0.6
    code, ev = run_cli(capsys, "eval", str(dsz), "--limit", "2000")
    assert code == 0 and ev["accuracy"] == pytest.approx(out["final_test_accuracy"])
    code, info = run_cli(capsys, "info", str(dsz))
    assert code == 0 and info["file_bytes"] == out["file_bytes"]
    onnx_path = tmp_path / f"{model}-{recipe}.onnx"
    code, ex = run_cli(capsys, "export", str(dsz), "-o", str(onnx_path))
    assert code == 0 and ex["argmax_agreement"] == 1.0
    return out, info, onnx.load(str(onnx_path)), dsz


def lowrank_detail(out):
    return next(s for s in out["stages"] if s["stage"] == "lowrank")["detail"]["layers"]


def test_slr_recipe_end_to_end(tmp_path, capsys, weights):
    out, info, graph, dsz = compress_and_check(capsys, tmp_path, "lenet-300-100", weights["lenet-300-100"], "slr")
    layers = lowrank_detail(out)
    assert set(layers) == {"fc1", "fc2"} and all(d["method"] == "slr" for d in layers.values())
    for d in layers.values():  # a quarter of the weights as non-zeros, more as the factors' size
        assert d["nonzero_after"] <= 0.25 * d["weights_before"] < d["weights_after"]
    names = {t["name"] for t in info["tensors"]}
    assert {"fc1.first.weight", "fc1.second.weight", "fc2.first.weight", "fc2.second.weight"} <= names
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("Gemm") == 5  # two small layers each for fc1 and fc2, not dense matrices
    dims = {i.name: list(i.dims) for i in graph.graph.initializer}
    fc1 = [d for n, d in dims.items() if n.startswith("fc1") and len(d) == 2]
    assert len(fc1) == 2 and all(d[0] * d[1] < 784 * 300 for d in fc1)
    st = tmp_path / "slr.safetensors"
    assert run_cli(capsys, "export", str(dsz), "-o", str(st))[0] == 0
    first = load_file(str(st))["fc1.first.weight"]  # the SLR zeros survive the file
    assert 0 < np.mean(first == 0) < 0.5


def test_svd_recipe_on_lenet5(tmp_path, capsys, weights):
    out, _, graph, _ = compress_and_check(capsys, tmp_path, "lenet-5", weights["lenet-5"], "svd")
    assert set(lowrank_detail(out)) == {"fc1"}
    assert [n.op_type for n in graph.graph.node].count("Gemm") == 3


def test_chained_recipe_on_lenet5_tucker_and_slr(tmp_path, capsys, weights):
    out, info, graph, _ = compress_and_check(capsys, tmp_path, "lenet-5", weights["lenet-5"], "lowrank-chain")
    assert [s["stage"] for s in out["stages"]] == ["baseline", "prune", "lowrank", "share", "code"]
    layers = lowrank_detail(out)
    assert {n: d["method"] for n, d in layers.items()} == {"conv1": "tucker", "conv2": "tucker", "fc1": "slr"}
    assert layers["conv2"]["shapes"][1][2:] == [5, 5] and layers["conv2"]["shapes"][0][2:] == [1, 1]
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("Conv") == 6 and ops.count("Gemm") == 3
    assert out["ratio"] > 10


def test_slr_recipe_on_a_users_own_model(tmp_path, capsys, monkeypatch):
    (tmp_path / "usermlp.py").write_text(
        "from torch import nn\n"
        "def mlp():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),\n"
        "                         nn.Linear(64, 10))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    w = tmp_path / "mlp.safetensors"
    code, _ = run_cli(capsys, "train", "--model", "usermlp:mlp", "--limit", "2000", "--epochs", "2", "-o", str(w))
    assert code == 0
    out, _, graph, _ = compress_and_check(capsys, tmp_path, "usermlp:mlp", w, "slr")
    assert set(lowrank_detail(out)) == {"1", "3"}  # the Sequential's linear layers but the last
    assert [n.op_type for n in graph.graph.node].count("Gemm") == 5
