"""``export --format c`` end to end: compressed LeNets on real Fashion-MNIST test images, a
low-rank chain, a MobileNetV2-architecture network on real photo crops, sanitizers, the runner's
input checks, the command line, ``info`` and the atomic write."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.cli import main as cli_main
from deepshrink.engine import export as engine_export
from deepshrink.engine import native
from deepshrink.engine.export import compile_engine, elf_alloc_bytes, export_c, flash_bytes, run_engine
from deepshrink.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from helpers import SANITIZE, STRICT, compress_weights, need_cc  # noqa: E402


@pytest.fixture(scope="module")
def trained(fashion_small):
    """LeNet-300-100 and LeNet-5 trained one epoch on 1000 real Fashion-MNIST images."""
    out = {}
    x, y = fashion_small.tensors("train")
    for name in ("lenet-300-100", "lenet-5"):
        torch.manual_seed(0)
        model = ds.build_model(name)
        ds.fit(model, (x[:1000], y[:1000]), (x[:0], y[:0]), ds.TrainConfig(epochs=1, keep_best=False), progress=False)
        out[name] = model.eval()
    return out


@pytest.fixture(scope="module")
def lenets(trained, fashion_small, save_dsz):
    """Both LeNets pruned and shared as Deep Compression stores them (80 % / 5 bits for fully
    connected layers, 60 % / 8 bits for convolutions; without retraining), as .dsz files."""
    paths = {}
    for name, model in trained.items():
        model = copy.deepcopy(model)
        for lname, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                compress_weights(m, 0.6, 8)
            elif isinstance(m, nn.Linear):
                compress_weights(m, 0.8, 5)
        paths[name] = save_dsz(model, fashion_small.input_spec, f"{name}.dsz")
    return paths


def _scores(path, raw: np.ndarray) -> np.ndarray:
    model = ds.load(path)
    with torch.no_grad():
        return model(model.input_spec.apply(raw)).numpy()


def _compile_export(folder: Path, flags=STRICT) -> Path:
    need_cc()
    build = folder.parent / f"{folder.name}-build"
    build.mkdir(exist_ok=True)
    files = {name: (folder / name).read_text() for name in ("model.c", "model.h", "main.c", "Makefile")}
    compile_engine(files, build, native.compiler(), flags=flags)
    return build / "main"


@pytest.mark.parametrize("name", ["lenet-300-100", "lenet-5"])
def test_lenets_match_pytorch_on_real_test_images(lenets, fashion_small, tmp_path, name):
    need_cc()
    path = lenets[name]
    raw = fashion_small.x_test[:500]  # real test images, uint8
    out = export_c(path, tmp_path / "engine", inputs=raw[:64])
    assert out["checked"] and out["argmax_agreement"] == 1.0 and out["max_abs_diff"] < 1e-4
    assert sorted(os.listdir(tmp_path / "engine")) == ["Makefile", "main.c", "model.c", "model.h"]
    header = (tmp_path / "engine" / "model.h").read_text()
    assert f"#define MODEL_ARENA_BYTES {out['arena_bytes']}\n" in header
    assert f"#define MODEL_WEIGHT_BYTES {out['weight_bytes']}\n" in header
    assert out["weight_bytes"] < out["flash_bytes"] < out["weight_bytes"] + 12_000  # code: a few KB
    main = _compile_export(tmp_path / "engine")  # -Wall -Wextra -Wpedantic -Werror
    want = _scores(path, raw)
    got = run_engine(main, raw)
    assert np.abs(got - want).max() < 1e-4
    labels = run_engine(main, raw, scores=False)
    np.testing.assert_array_equal(labels, ds.load(path).predict(raw))
    assert (labels == fashion_small.y_test[:500]).mean() > 0.3  # a trained network (chance: 0.1), on real images


def test_flash_and_memory_of_lenet_300_100(lenets, tmp_path):
    need_cc()
    path = lenets["lenet-300-100"]
    out = export_c(path, tmp_path / "engine")
    assert out["flash_bytes"] <= 1.5 * out["dsz_bytes"]  # the compressed form stays compressed
    assert out["arena_bytes"] < 8192 and out["arena_bytes"] == 4 * (300 + 100)  # fc1 | fc2; fc3 reuses fc1's place
    dense = sum(4 * p.numel() for p in ds.load(path).parameters())
    assert out["weight_bytes"] < dense / 15  # 80 % pruned, 5-bit indices


def test_sanitizers_on_real_samples(lenets, fashion_small, tmp_path):
    need_cc()
    probe = tmp_path / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    if subprocess.run([native.compiler(), *SANITIZE, str(probe), "-o", str(tmp_path / "probe")],
                      capture_output=True).returncode != 0:
        pytest.skip("the compiler cannot build with -fsanitize=address,undefined here")
    raw = fashion_small.x_test[:8]
    for name, path in lenets.items():
        export_c(path, tmp_path / name, inputs=raw)
        main = _compile_export(tmp_path / name, SANITIZE)
        res = subprocess.run([str(main), "--scores"], input=raw.tobytes(), capture_output=True)
        assert res.returncode == 0 and not res.stderr, res.stderr.decode()[-2000:]
        got = np.array([[float(v) for v in line.split()] for line in res.stdout.decode().splitlines()])
        assert np.abs(got - _scores(path, raw)).max() < 1e-4


def test_low_rank_chain(trained, fashion_small, save_dsz, tmp_path):
    need_cc()
    from deepshrink.lowrank import factorize

    model = copy.deepcopy(trained["lenet-300-100"])
    model.fc1 = factorize(model.fc1, "svd", rank=0.25)  # two layers, the first without a bias
    model.fc2 = factorize(model.fc2, "svd", rank=0.25)
    compress_weights(model.fc1.first, 0.0, 5)   # every weight kept, shared: codebook/dense
    compress_weights(model.fc1.second, 0.3, 5)
    compress_weights(model.fc3, 0.5, 5)
    path = save_dsz(model, fashion_small.input_spec, "chain.dsz")
    ops = [n.op for n in ds.load(path).graph.nodes]
    assert ops.count("linear") == 5
    raw = fashion_small.x_test[:200]
    out = export_c(path, tmp_path / "engine", inputs=raw)
    assert out["checked"] and out["argmax_agreement"] == 1.0
    got = run_engine(_compile_export(tmp_path / "engine"), raw)
    assert np.abs(got - _scores(path, raw)).max() < 1e-4


def _small_mobilenet_v2() -> nn.Module:
    """MobileNetV2's architecture (the zoo's own blocks) at a small width: stride-2 stem,
    inverted residuals with expansion, depthwise and pointwise convolutions, a residual add,
    ReLU6, global average pooling, dropout and the classifier."""
    from deepshrink.models.mobilenet_v2 import InvertedResidual, conv_bn_relu6

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                conv_bn_relu6(3, 16, stride=2), InvertedResidual(16, 8, 1, 1), InvertedResidual(8, 12, 2, 6),
                InvertedResidual(12, 12, 1, 6), InvertedResidual(12, 16, 2, 6), InvertedResidual(16, 16, 1, 6),
                conv_bn_relu6(16, 64, kernel_size=1))
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, 10))

        def forward(self, x):
            x = torch.nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
            return self.classifier(torch.flatten(x, 1))

    torch.manual_seed(0)
    model = Small().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("fold", [False, True])
def test_mobilenet_v2_architecture_on_real_photo_crops(save_dsz, tmp_path, fold):
    need_cc()
    from deepshrink.data.images import ImageCrops, imagenet_spec
    from deepshrink.graph.fold import fold_batchnorm_modules

    model = _small_mobilenet_v2()
    spec = imagenet_spec(48)
    if fold:  # as compress does: batch norms folded, then convolutions shared, the classifier pruned
        fold_batchnorm_modules(model)
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                compress_weights(m, 0.0, 8)
        compress_weights(model.classifier[1], 0.7, 5)
    path = save_dsz(model, spec, f"mobilenet-{fold}.dsz")
    ops = {n.op for n in ds.load(path).graph.nodes}
    assert {"conv2d", "relu6", "add", "global_avg_pool2d", "flatten", "linear"} <= ops
    assert ("batch_norm" in ops) != fold
    raw = ImageCrops({"train": 1, "val": 1, "test": 12}, size=48).raw("test")  # real photos' crops, uint8
    out = export_c(path, tmp_path / "engine", inputs=raw)
    assert out["checked"] and out["argmax_agreement"] == 1.0
    got = run_engine(_compile_export(tmp_path / "engine"), raw)
    want = _scores(path, raw)
    # 30 layers of float32 sums in another order: within 1e-5 of the outputs' scale (1e-4 absolute
    # would not mean the same for outputs of any scale)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).all()


def test_runner_checks_its_input(lenets, tmp_path):
    need_cc()
    export_c(lenets["lenet-300-100"], tmp_path / "engine")
    main = _compile_export(tmp_path / "engine")
    for data in (b"", b"\x00" * 783, b"\x00" * 785):
        res = subprocess.run([str(main)], input=data, capture_output=True)
        assert res.returncode == 2 and not res.stdout
        assert f"the input has {len(data)} bytes, not a positive multiple of 784".encode() in res.stderr
    sample = tmp_path / "two.bin"
    sample.write_bytes(bytes(range(256)) * 6 + bytes(32))  # two samples of 784 bytes
    res = subprocess.run([str(main), str(sample)], capture_output=True, text=True)
    assert res.returncode == 0 and len(res.stdout.split()) == 2
    res = subprocess.run([str(main), "--time", "50", str(sample)], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("median_us=") and "runs=50" in res.stdout
    for argv in (["--time", "0"], ["--nope"], [str(tmp_path / "missing.bin")]):
        assert subprocess.run([str(main), *argv], input=b"", capture_output=True).returncode == 2


def _cli(capsys, *argv: str) -> tuple[int, dict]:
    code = cli_main([*argv, "--json", "--no-progress"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return code, json.loads(lines[0])


def test_cli_export_and_info(lenets, tmp_path, capsys):
    need_cc()
    path = str(lenets["lenet-300-100"])
    code, out = _cli(capsys, "export", path, "-o", str(tmp_path / "engine"), "--format", "c")
    assert code == 0 and out["format"] == "c" and out["checked"] is True and out["argmax_agreement"] == 1.0
    assert out["files"] == ["model.c", "model.h", "main.c", "Makefile"] and out["dsz_bytes"] == os.path.getsize(path)
    code, info = _cli(capsys, "info", path)
    engine = info["engine"]
    assert engine["supported"] and engine["flash_bytes"] is None  # no compiler needed by default
    assert (engine["weight_bytes"], engine["arena_bytes"]) == (out["weight_bytes"], out["arena_bytes"])
    code, info = _cli(capsys, "info", path, "--engine")
    assert info["engine"]["flash_bytes"] == out["flash_bytes"]
    assert cli_main(["export", path, "-o", str(tmp_path / "engine2"), "--format", "c"]) == 0
    text = capsys.readouterr().out
    assert "flash" in text and "RAM arena" in text and "× the .dsz" in text and "Traceback" not in text
    code, err = _cli(capsys, "export", path, "-o", str(tmp_path / "x.onnx"), "--format", "c", "--with-preprocessing")
    assert code == 2 and "ONNX" in err["error"]


def test_folder_is_written_atomically(lenets, tmp_path):
    path = lenets["lenet-300-100"]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="notes.txt"):
        export_c(path, busy, check=False)
    assert os.listdir(busy) == ["notes.txt"]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        export_c(path, tmp_path / "afile", check=False)
    out = tmp_path / "engine"
    export_c(path, out, check=False)
    (out / "main").write_text("a build left by make")
    (out / "model.c").write_text("an older engine")
    export_c(path, out, check=False)
    assert sorted(os.listdir(out)) == ["Makefile", "main.c", "model.c", "model.h"]
    assert (out / "model.c").read_text().startswith("/* Generated by deepshrink")
    assert sorted(os.listdir(tmp_path)) == ["afile", "busy", "engine"]  # no temporary folder left


def test_without_a_compiler_the_export_is_written_unchecked(lenets, tmp_path, monkeypatch):
    monkeypatch.setattr(native, "compiler", lambda: None)
    out = export_c(lenets["lenet-300-100"], tmp_path / "engine")
    assert out["checked"] is False and out["flash_bytes"] is None and out["max_abs_diff"] is None
    assert (tmp_path / "engine" / "model.c").exists()
    report = engine_export.engine_report(lenets["lenet-300-100"], flash=True)
    assert report["flash_bytes"] is None and "no C compiler" in report["flash_error"]
    assert report["weight_bytes"] == out["weight_bytes"]


def test_flash_bytes_from_size_and_from_the_elf(lenets, tmp_path, monkeypatch):
    need_cc()
    export_c(lenets["lenet-300-100"], tmp_path / "engine", check=False)
    obj = _compile_export(tmp_path / "engine").parent / "model.o"
    by_size = flash_bytes(obj)
    assert by_size == elf_alloc_bytes(obj.read_bytes()) if shutil.which("size") else by_size is not None
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert flash_bytes(obj) == elf_alloc_bytes(obj.read_bytes())
    assert elf_alloc_bytes(b"not an object file" * 10) is None
    assert flash_bytes(tmp_path / "missing.o") is None


def test_info_decodes_large_networks_only_when_asked(lenets, monkeypatch):
    from deepshrink.errors import CorruptStream

    path = lenets["lenet-300-100"]
    monkeypatch.setattr(engine_export, "INFO_MAX_ELEMENTS", 1000)
    e = ds.info(path)["engine"]
    assert e["weight_bytes"] is None and e["arena_bytes"] == 1600 and "--engine" in e["note"]
    assert ds.info(path, engine=False).get("engine") is None

    def corrupt(mf, limits):
        raise CorruptStream("a stream that does not decode")

    monkeypatch.setattr(engine_export, "INFO_MAX_ELEMENTS", 1 << 24)
    monkeypatch.setattr(engine_export, "_typed", corrupt)
    e = ds.info(path)["engine"]  # info itself still succeeds
    assert e["weight_bytes"] is None and "does not decode" in e["error"]


@pytest.mark.parametrize("name", ["lenet-300-100", "lenet-5"])
def test_engine_runtime_in_process_matches_pytorch(lenets, fashion_small, name):
    """``load(mode="engine")``: the same compiled engine called through ctypes, batch by batch."""
    need_cc()
    raw = fashion_small.x_test[:200]
    dense = ds.load(lenets[name])
    engine = ds.load(lenets[name], mode="engine")
    assert engine.mode == "engine" and dense.mode == "dense"
    x = dense.input_spec.apply(raw)
    with torch.no_grad():
        want, got = dense(x), engine(x)
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= 1e-4
    np.testing.assert_array_equal(engine.predict(raw), dense.predict(raw))
    report = engine.net.report()
    assert report["arena_bytes"] > 0 and report["weight_bytes"] > 0
    with pytest.raises(ds.DeepshrinkError, match="shape"):
        engine(torch.zeros(2, 3, 28, 28))


def test_engine_runtime_needs_a_compiler(lenets, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(ConfigError, match="C compiler"):
        ds.load(lenets["lenet-300-100"], mode="engine")


def test_cli_eval_with_the_engine_runtime(lenets, fashion_small, tmp_path, capsys):
    need_cc()
    data = tmp_path / "data.npz"
    np.savez(data, x_train=fashion_small.x_train[:50], y_train=fashion_small.y_train[:50],
             x_test=fashion_small.x_test[:300], y_test=fashion_small.y_test[:300])
    code, dense = _cli(capsys, "eval", str(lenets["lenet-300-100"]), "--data", str(data))
    assert code == 0
    code, out = _cli(capsys, "eval", str(lenets["lenet-300-100"]), "--data", str(data), "--runtime", "engine")
    assert code == 0, out
    assert out["runtime"] == "engine" and out["accuracy"] == dense["accuracy"]
    assert out["engine"]["arena_bytes"] > 0
