"""analyze, and compress --target-bytes / --target-ratio / --max-drop, through the command line."""

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

import deepshrink as ds


@pytest.fixture(scope="module")
def base(tmp_path_factory, fashion):
    from deepshrink.cli import main

    path = tmp_path_factory.mktemp("w") / "base.safetensors"
    assert main(["train", "--model", "lenet-300-100", "--limit", "2000", "--epochs", "2", "-o", str(path),
                 "--no-progress", "--json"]) == 0
    return path


def _compress(cli, base, out, *extra):
    return cli("compress", "--model", "lenet-300-100", "--weights", str(base), "--limit", "2000", "-o", str(out),
               *extra)


def test_target_bytes_writes_a_file_within_budget_and_the_recipe_it_chose(cli, base, fast_recipe, tmp_path):
    out = tmp_path / "m.dsz"
    code, res = _compress(cli, base, out, "--recipe", str(fast_recipe), "--target-bytes", "30000")
    assert code == 0, res
    assert out.stat().st_size == res["file_bytes"] <= 30000
    recipe_file = Path(res["budget"]["recipe_file"])
    assert recipe_file == tmp_path / "m.recipe.toml"
    chosen = ds.load_recipe(recipe_file)  # an ordinary recipe: rerun it, edit it
    assert set(chosen.stages[0].targets({"fc1": "linear", "fc2": "linear", "fc3": "linear"})) == {"fc1", "fc2", "fc3"}
    assert res["budget"]["target"] == {"bytes": 30000}
    assert all(r["met"] for r in res["budget"]["runs"][-1:])


@pytest.mark.parametrize("extra, words", [
    (("--max-drop", "-1"), "finite number >= 0"),
    (("--target-bytes", "0"), "≥ 1"),
    (("--target-ratio", "0.5"), ">= 1"),
    (("--target-bytes", "100"), "header, biases"),
    (("--target-bytes", "20000", "--max-drop", "1"), "one of --target-bytes"),
    (("--recipe", "svd", "--max-drop", "1"), "no stage whose per-layer setting"),
    (("--target-bytes", "20000", "--confidence", "0.9"), "--confidence applies to --max-drop only"),
    (("--max-drop", "0.5", "--confidence", "1.5"), "must be in [0.5, 1)"),
])
def test_bad_targets_exit_2_with_a_message_and_no_file(cli, base, tmp_path, extra, words):
    out = tmp_path / "m.dsz"
    code, res = _compress(cli, base, out, *extra)
    assert code == 2 and words in res["error"], res
    assert not out.exists() and not (tmp_path / "m.recipe.toml").exists()


def test_analyze_writes_the_json_and_an_escaped_self_contained_report(cli, base, tmp_path):
    out = tmp_path / "a.json"
    code, res = cli("analyze", "--model", "lenet-300-100", "--weights", str(base), "--limit", "2000",
                    "--techniques", "prune,share,svd", "--fisher-samples", "64", "-o", str(out))
    assert code == 0, res
    doc = json.loads(out.read_text())
    assert {c["technique"] for c in doc["curves"]} == {"prune", "share", "svd"}
    assert [entry["layer"] for entry in doc["fisher"]] == ["fc1", "fc2", "fc3"]
    assert len(doc["noise"]) == 3 and len(doc["spectra"]) == 3
    prune = next(c for c in doc["curves"] if c["layer"] == "fc1" and c["technique"] == "prune")
    assert prune["points"][0]["val"] == doc["baseline"]["val"]  # sparsity 0 is the dense network
    html = Path(res["html"]).read_text()
    assert res["html"] == str(tmp_path / "a.html") and "Content-Security-Policy" in html
    assert "<script" not in html and html.count("data:image/png;base64,") >= 4
    HTMLParser().feed(html)


def test_analysis_strings_from_the_user_are_escaped(base, fashion):
    from deepshrink.models import build_model, load_weights

    model = build_model("lenet-300-100")
    load_weights(model, base)
    hostile = '<script>alert(1)</script> "onload=alert(2) & <img src=x onerror=alert(3)>'
    a = ds.analyze(model, fashion.subset(1000, 300, 300, seed=0), techniques=["prune"], fisher_samples=16,
                   noise_scales=(0.0, 0.5), name=hostile, data_name=hostile, progress=False)
    html = a.html()
    assert "<script" not in html and "<img src=x" not in html and "&lt;script&gt;alert(1)" in html


@pytest.mark.parametrize("extra, words", [
    (("--techniques", "prune,magic"), "unknown technique 'magic'"),
    (("--val-size", "0"), "validation split"),
])
def test_analyze_bad_input_exits_2_before_any_work(cli, base, tmp_path, extra, words):
    out = tmp_path / "a.json"
    code, res = cli("analyze", "--model", "lenet-300-100", "--weights", str(base), "--limit", "2000",
                    "-o", str(out), *extra)
    assert code == 2 and words in res["error"], res
    assert not out.exists() and not (tmp_path / "a.html").exists()


def test_analyze_names_unsupported_operations_before_measuring(cli, tmp_path, monkeypatch, npz):
    (tmp_path / "badmodels2.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class Bad(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(784, 10)\n"
        "    def forward(self, x):\n"
        "        return torch.cumsum(self.fc(x.flatten(1)), 1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from badmodels2 import Bad

    from deepshrink.models.loading import save_weights

    save_weights(Bad(), tmp_path / "w.safetensors")
    data = npz(tmp_path / "toy.npz", n_train=200, n_test=50)
    code, res = cli("analyze", "--model", "badmodels2:Bad", "--weights", str(tmp_path / "w.safetensors"),
                    "--data", str(data), "--val-size", "20", "-o", str(tmp_path / "a.json"))
    assert code == 2 and res["type"] == "UnsupportedOperationError" and "cumsum" in res["error"]
