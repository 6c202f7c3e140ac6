"""``deepshrink.load(path, mode="compressed")``: layers run from the typed compressed weights with
a kernel chosen per layer by measuring, and the results match dense decoding to float rounding
on real Fashion-MNIST images, for every kernel forced in turn, at batch 1 and 64."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.cli import main
from deepshrink.errors import ConfigError, ModelError
from deepshrink.lowrank import factorize
from deepshrink.runtime import kernels as K
from deepshrink.runtime import select
from deepshrink.runtime.compressed import CompressedNet, _dispatch
from deepshrink.storage import TensorCoding

sys.path.insert(0, str(Path(__file__).parents[1] / "fileformat"))
sys.path.insert(0, str(Path(__file__).parents[1] / "graph"))
from test_model_file import SPEC, tiny_compressed_model  # noqa: E402
from test_networks import TinyBert, _tokens  # noqa: E402


def _prune_share(model: nn.Module, rng: np.random.Generator, density: dict[str, float], bits: dict[str, int]) -> None:
    """Prune each layer's weight at random to ``density`` (by layer name, ``_default``) and
    share the rest on a codebook of ``2**bits - 1`` values, in place."""
    with torch.no_grad():
        for name, m in model.named_modules():
            if not isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                continue
            w = m.weight.numpy()
            scale = float(np.abs(w).max()) or 1.0
            book = np.linspace(-scale, scale, 2 ** bits.get(name, bits["_default"]) - 1).astype(np.float32)
            shared = book[np.abs(w[..., None] - book).argmin(-1)]
            keep = rng.random(w.shape) < density.get(name, density["_default"])
            m.weight.copy_(torch.from_numpy(shared * keep))


def _lenet5() -> nn.Module:
    torch.manual_seed(5)
    model = ds.build_model("lenet-5").eval()
    _prune_share(model, np.random.default_rng(5), {"conv1": 0.7, "conv2": 0.2, "fc1": 0.08, "_default": 0.2},
                 {"conv1": 8, "conv2": 8, "_default": 5})
    return model


def _lowrank_chain() -> nn.Module:
    """LeNet-300-100 with fc1 and fc2 factorised by SVD, the factors shared (and the second
    factors pruned): the file stores each factor as an ordinary layer."""
    torch.manual_seed(7)
    model = ds.build_model("lenet-300-100").eval()
    model.fc1 = factorize(model.fc1, "svd", rank=0.25)
    model.fc2 = factorize(model.fc2, "svd", rank=0.25)
    _prune_share(model, np.random.default_rng(7), {"fc1.second": 0.4, "fc2.second": 0.5, "_default": 1.0},
                 {"_default": 5})
    return model.eval()


def _raw_lenet300() -> nn.Module:
    torch.manual_seed(3)
    return ds.build_model("lenet-300-100").eval()


RAW = lambda name, tensor, op, role: TensorCoding(compress=False)  # noqa: E731


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name → path of each compressed file the runtime is checked on."""
    d = tmp_path_factory.mktemp("compressed")
    out = {}
    for name, model, coding in [
        ("lenet300", tiny_compressed_model(), None),
        ("lenet5", _lenet5(), None),
        ("lowrank", _lowrank_chain(), None),
        ("raw", _raw_lenet300(), RAW),
    ]:
        out[name] = d / f"{name}.dsz"
        ds.save_model(model, out[name], SPEC, **({"coding": coding} if coding else {}))
    return out


@pytest.fixture(scope="module")
def images(fashion):
    """64 real Fashion-MNIST test images, preprocessed as the files' input spec says."""
    return SPEC.apply(fashion.x_test[:64])


def _agree(got: torch.Tensor, want: torch.Tensor) -> None:
    scale = float(want.abs().max())
    diff = float((got - want).abs().max())
    assert diff <= 1e-5 * max(scale, 1e-6), f"max |diff| {diff:g} at output scale {scale:g}"
    if want.ndim == 2:
        assert torch.equal(got.argmax(1), want.argmax(1))


def _kernel_names() -> list[str]:
    return [name for name, cls in K.KERNELS.items() if cls.available() is None]


def test_the_files_hold_the_typed_tensors_they_are_meant_to(files):
    kinds = {}
    for name, path in files.items():
        kinds[name] = {k["layer"]: k["encoding"] for k in ds.load(path, mode="compressed", kernels="dense").kernels}
    assert set(kinds["lenet300"].values()) == {"SparseCodebookTensor"}
    assert kinds["lowrank"]["fc1.first"] == "CodebookTensor" and kinds["lowrank"]["fc1.second"] == "SparseCodebookTensor"
    assert set(kinds["lenet5"]) == {"conv1", "conv2", "fc1", "fc2"}
    assert set(kinds["raw"].values()) == {"DenseTensor"}


@pytest.mark.parametrize("name", ["lenet300", "lenet5", "lowrank", "raw"])
@pytest.mark.parametrize("kernel", [None, *_kernel_names()])
def test_every_kernel_matches_dense_decoding_on_real_images(files, images, name, kernel):
    dense = ds.load(files[name])
    try:
        model = ds.load(files[name], mode="compressed", kernels=kernel)
    except ConfigError as exc:  # a kernel that runs none of this file's layers (codebook on raw weights)
        assert kernel == "codebook" and name == "raw" and "none of the layers" in str(exc)
        return
    assert model.mode == "compressed" and dense.mode == "dense"
    if kernel is not None:
        chosen = {k["kernel_batch1"] for k in model.kernels} | {k["kernel_batchN"] for k in model.kernels}
        assert kernel in chosen
    with torch.no_grad():
        for batch in (1, 64):
            _agree(model(images[:batch]), dense(images[:batch]))
        for i in range(3):  # batch 1 through the small-batch kernels, sample by sample
            _agree(model(images[i : i + 1]), dense(images[i : i + 1]))
    assert np.array_equal(model.predict(images, assume="normalized"),
                          dense.predict(images, assume="normalized"))


def test_kernels_forced_per_layer(files, images):
    dense = ds.load(files["lenet300"])
    model = ds.load(files["lenet300"], mode="compressed", kernels={"fc1": "scipy", "fc2": "csr", "fc3": "codebook"})
    got = {k["layer"]: (k["kernel_batch1"], k["kernel_batchN"], k["forced"]) for k in model.kernels}
    assert got == {"fc1": ("scipy", "scipy", True), "fc2": ("csr", "csr", True), "fc3": ("codebook", "codebook", True)}
    with torch.no_grad():
        _agree(model(images), dense(images))
        _agree(model(images[:1]), dense(images[:1]))


def test_the_report_names_the_choice_its_timings_and_resident_bytes(files):
    model = ds.load(files["lenet300"], mode="compressed")
    report = model.kernels
    assert [k["layer"] for k in report] == ["fc1", "fc2", "fc3"]
    for k in report:
        assert k["kernel_batch1"] in K.KERNELS and k["kernel_batchN"] in K.KERNELS and k["measured"]
        assert {"batch1", "batch64"} <= set(k["timings_us"]["dense"])
        for kernel, batch in ((k["kernel_batch1"], "batch1"), (k["kernel_batchN"], "batch64")):
            fastest = min(t[batch] for t in k["timings_us"].values())
            assert k["timings_us"][kernel][batch] <= select.ONE_KERNEL_MARGIN * fastest + 0.01
        assert k["weight_bytes_dense"] == 4 * np.prod(k["shape"])
        assert k["weight_bytes_resident"] > 0
    json.dumps(report)  # plain data, for --json
    assert model.net.select_seconds < select.TOTAL_BUDGET_S + 2.0
    assert model.net.weight_bytes_resident == sum(k["weight_bytes_resident"] for k in report)


def test_a_layer_without_the_dense_kernel_keeps_no_dense_weight(files):
    model = ds.load(files["lenet300"], mode="compressed", kernels="csr")
    fc1 = model.net.choices["fc1"]
    assert fc1.small is fc1.large and not isinstance(fc1.small, K.DenseKernel)
    report = model.kernels[0]
    assert report["weight_bytes_resident"] < report["weight_bytes_dense"] / 4  # 8% density: ~0.16 of dense
    layer = model.net.choices["fc1"].layer
    assert layer._dense is None and layer._csr is None and layer.weight is None  # the typed tensor too
    # the dense parameters are still there on request, equal to dense decoding
    want = ds.load(files["lenet300"]).dense_state_dict()
    got = model.dense_state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_candidates_far_larger_than_the_dense_weight_are_not_tried(files):
    model = ds.load(files["raw"], mode="compressed")
    for k in model.kernels:  # fully dense weights: CSR keeps 2x plus the row pointers
        assert "over 2x the dense weight" in k["rejected"]["csr"] and "scipy" in k["rejected"]
        assert k["rejected"]["codebook"] == "the weight has no codebook"
        assert k["kernel_batch1"] != "csr"


def test_the_large_batch_winner_runs_batches_from_the_threshold():
    calls = []
    fn = _dispatch(lambda x: calls.append("small") or x, lambda x: calls.append("large") or x)
    for n in (1, select.SMALL_BATCH - 1, select.SMALL_BATCH, 64):
        fn(torch.zeros(n, 3))
    assert calls == ["small", "small", "large", "large"]
    one = lambda x: x  # noqa: E731
    assert _dispatch(one, one) is one


def test_measuring_stops_when_the_load_budget_is_spent(files, monkeypatch, images):
    monkeypatch.setattr(select, "TOTAL_BUDGET_S", 0.0)
    model = ds.load(files["lenet5"], mode="compressed")
    report = model.kernels
    assert all(k["kernel_batch1"] == k["kernel_batchN"] == "dense" and not k["measured"] for k in report)
    assert "budget" in report[0]["rejected"]["csr"]
    with torch.no_grad():
        _agree(model(images[:5]), ds.load(files["lenet5"])(images[:5]))


def test_a_wrong_kernel_is_dropped_with_a_warning(files, monkeypatch):
    class Wrong(K.DenseKernel):
        name = "wrong"

        def __init__(self, layer):
            super().__init__(layer)
            right = self.fn
            self.fn = lambda x: right(x) + 1.0

    monkeypatch.setitem(K.KERNELS, "wrong", Wrong)
    with pytest.warns(RuntimeWarning, match="wrong kernel's output differs"):
        model = ds.load(files["lenet300"], mode="compressed")
    for k in model.kernels:
        assert k["rejected"]["wrong"] == "its output differed from the dense kernel's"
        assert "wrong" not in (k["kernel_batch1"], k["kernel_batchN"])


class Convs(nn.Module):
    """Convolutions the CSR kernels rebuild with F.unfold: grouped (dense only), dilated with
    stride, 'same' with an even kernel (padding at one end), and a Conv1d."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.g = nn.Conv2d(4, 4, 3, groups=2)
        self.d = nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2)
        self.s = nn.Conv2d(6, 6, (2, 3), padding="same")
        self.c1 = nn.Conv1d(6, 5, 4, padding="same")
        self.c1b = nn.Conv1d(5, 3, 3, stride=2, bias=False)
        self.fc = nn.Linear(3 * 84, 10)

    def forward(self, x):
        y = torch.relu(self.s(torch.relu(self.d(torch.relu(self.g(self.a(x)))))))
        y = self.c1b(torch.relu(self.c1(y.view(y.size(0), 6, -1))))
        return self.fc(y.view(y.size(0), -1))


def test_convolutions_of_every_form_match_dense(images):
    torch.manual_seed(11)
    model = Convs().eval()
    _prune_share(model, np.random.default_rng(11), {"_default": 0.4}, {"_default": 6})
    data = ds.pack_model(model, SPEC)[0]
    dense = ds.load(data)
    with torch.no_grad():
        want = model(images)
        torch.testing.assert_close(dense(images), want, rtol=1e-5, atol=1e-6)
    for kernel in [None, *_kernel_names()]:
        net = ds.load(data, mode="compressed", kernels=kernel)
        chosen = {k["layer"]: k["kernel_batch1"] for k in net.kernels}
        assert chosen["g"] not in ("csr", "scipy")  # grouped: measured among the others
        if kernel is not None and kernel not in ("dense", "codebook", "native"):
            assert {name for name, k in chosen.items() if k == kernel} == set(chosen) - {"g"}
        with torch.no_grad():
            _agree(net(images), want)
            _agree(net(images[:1]), want[:1])
    with pytest.raises(ConfigError, match="grouped"):
        ds.load(data, mode="compressed", kernels={"g": "csr"})


def test_a_multi_input_network_keeps_embeddings_on_their_forward():
    torch.manual_seed(0)
    model = TinyBert().eval()
    _prune_share(model, np.random.default_rng(0), {"_default": 0.5}, {"_default": 5})
    ids, mask = _tokens(n=9)
    data = ds.pack_model(model, None, probe=(ids, mask))[0]
    dense = ds.load(data)
    for kernel in [None, *_kernel_names()]:
        net = ds.load(data, mode="compressed", kernels=kernel)
        layers = [k["layer"] for k in net.kernels]
        assert len(layers) == 6 and not any("embeddings" in name for name in layers)
        with torch.no_grad():
            want = dense(ids, mask)
            _agree(net(ids, mask), want)
            _agree(net(attention_mask=mask, input_ids=ids), want)
            _agree(net(ids[:1], mask[:1]), want[:1])
        with pytest.raises(ModelError, match="same N"):
            net(ids, mask[:3])
        with pytest.raises(ModelError, match="missing"):
            net(ids)


def test_compressed_mode_keeps_chunking_and_input_checks(files, images):
    dense = ds.load(files["lenet300"])
    small = ds.load(files["lenet300"], mode="compressed", limits=ds.Limits(max_activation_elements=7 * dense.plan.peak_elements))
    assert small.max_batch == 7 and small.net.large_batch == 7
    assert all("batch7" in t for k in small.kernels for t in k["timings_us"].values())
    with torch.no_grad():
        _agree(small(images), dense(images))
    raw = np.random.default_rng(0).integers(0, 256, size=(30, 1, 28, 28), dtype=np.uint8)
    assert np.array_equal(small.predict(raw), dense.predict(raw))
    with pytest.raises(ModelError, match="shape"):
        small(images[:, :, :27])
    with pytest.raises(ds.DeepshrinkError, match="uint8"):
        small.predict(raw.astype(np.float32))
    assert isinstance(small.net, CompressedNet) and dense.kernels == []


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "fast"}, "mode must be one of"),
    ({"kernels": "csr"}, "mode='compressed'"),
    ({"mode": "compressed", "kernels": "blas"}, "unknown kernel 'blas'"),
    ({"mode": "compressed", "kernels": {"fc9": "csr"}}, "fc9.*fc1"),
    ({"mode": "compressed", "kernels": {"fc1": 3}}, "kernel name"),
    ({"mode": "compressed", "kernels": ["csr"]}, "mapping"),
])
def test_bad_arguments_are_refused_by_name(files, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ds.load(files["lenet300"], **kwargs)


def test_eval_reports_the_runtime_and_its_kernels(files, tmp_path, capsys, fashion_small):
    npz = tmp_path / "d.npz"
    f = fashion_small
    np.savez(npz, x_train=f.x_train[:200], y_train=f.y_train[:200], x_test=f.x_test[:300], y_test=f.y_test[:300])
    outs = {}
    for runtime in ("dense", "compressed"):
        code = main(["eval", str(files["lenet300"]), "--data", str(npz), "--runtime", runtime, "--json", "--no-progress"])
        lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
        assert code == 0 and len(lines) == 1
        outs[runtime] = json.loads(lines[0])
    assert outs["dense"]["runtime"] == "dense" and "kernels" not in outs["dense"]
    assert outs["compressed"]["runtime"] == "compressed"
    assert [k["layer"] for k in outs["compressed"]["kernels"]] == ["fc1", "fc2", "fc3"]
    assert outs["compressed"]["accuracy"] == outs["dense"]["accuracy"]
    code = main(["eval", str(files["lenet300"]), "--data", str(npz), "--runtime", "fast", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 2 and "--runtime" in out["error"]
    code = main(["eval", str(files["lenet300"]), "--data", str(npz), "--runtime", "compressed", "--prefer", "memory",
                 "--json", "--no-progress"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["accuracy"] == outs["dense"]["accuracy"]
    assert all(k["kernel_batch1"] == k["kernel_batchN"] for k in out["kernels"])
    assert sum(k["weight_bytes_resident"] for k in out["kernels"]) <= sum(
        k["weight_bytes_resident"] for k in outs["compressed"]["kernels"])
    code = main(["eval", str(files["lenet300"]), "--data", str(npz), "--prefer", "memory", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 2 and "--prefer" in out["error"]


sys.path.insert(0, str(Path(__file__).parents[1] / "attacks"))
from attack_corpus import attack_cases, heavy_valid_cases  # noqa: E402
from test_attack_corpus import _refused  # noqa: E402


def test_the_attack_corpus_is_refused_in_compressed_mode_too(tmp_path):
    for name, path in attack_cases(tmp_path):
        assert str(_refused(lambda p: ds.load(p, mode="compressed"), path)), name


def test_heavy_valid_files_open_in_compressed_mode(tmp_path):
    """10,000 relus; 9,990 linear nodes of one weight: they share one kernel, measured once."""
    cases = dict(heavy_valid_cases(tmp_path))
    for name in ("chain_10000_nodes", "one_weight_9990_nodes"):
        model = ds.load(cases[name], mode="compressed")
        with torch.no_grad():
            x = torch.randn(3, 4)
            torch.testing.assert_close(model(x), ds.load(cases[name])(x), rtol=0, atol=0)
    report = model.kernels
    assert len(report) == 9_990 and report[1]["shared_with"] == "l0" and report[0]["shared_with"] is None
    assert model.net.select_seconds < 1.0
    assert model.net.weight_bytes_resident == report[0]["weight_bytes_resident"]
