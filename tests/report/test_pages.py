"""The analysis and compress-run pages: complete, self-contained, and every untrusted string
(layer, model, recipe and meta names) shown as text, never as markup."""

from __future__ import annotations

import copy
import math

import pytest

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from report_helpers import HOSTILE, check_page  # noqa: E402
from deepshrink.report import analysis_page, run_page, write_page
from deepshrink.report.analysis import TECHNIQUES


def test_analysis_page_shows_every_section_and_escapes_the_hostile_names(doc):
    page = analysis_page(doc)
    parsed = check_page(page)
    # one figure per technique, noise, Fisher and spectra: the sample document has them all
    assert parsed.images == len(TECHNIQUES) - 1 + 3  # no slr curves in the sample
    assert HOSTILE in parsed.joined  # shown whole, as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &quot;onload=alert(2) &amp; &lt;img" in page
    assert 'onerror=alert(3)>' not in page and '"onload=' not in page
    for title in ("Pruning (magnitude)", "Weight sharing (k-means codebook)", "Uniform quantisation",
                  "Low rank (truncated SVD)", "Robustness to weight noise", "Singular-value spectra"):
        assert title in parsed.joined
    assert f"{100 * doc['baseline']['val']:.2f}%" in parsed.joined
    # the spectra table gives each layer's 90%-energy ranks, dense and pruned
    for sp in doc["spectra"]:
        assert sp["rank90_dense"] <= len(sp["dense"]) and sp["rank90_pruned"] <= len(sp["dense"])


def test_sample_document_is_measured_not_made_up(doc, lenet):
    """The fixture document is a real measurement: bytes fall as pruning rises, ranks are real."""
    prune = [c for c in doc["curves"] if c["technique"] == "prune"]
    assert len(prune) == len(doc["layers"]) == 3
    for c in prune:
        sizes = [p["bytes"] for p in c["points"]]
        assert sizes == sorted(sizes, reverse=True) and all(0 <= p["val"] <= 1 for p in c["points"])
    fc1 = doc["spectra"][0]
    assert len(fc1["dense"]) == min(lenet.fc1.weight.shape) and 1 <= fc1["rank90_dense"] <= 300


def test_analysis_page_survives_missing_and_wrong_values(doc):
    """Only model, layers and baseline are required; wrong types show as dashes, not errors."""
    minimal = {"model": "m", "layers": [], "baseline": {"val": 0.9}}
    assert check_page(analysis_page(minimal)).images == 0
    bad = copy.deepcopy(doc)
    bad["seconds"] = "soon"
    bad["baseline"] = {"val": math.nan}
    bad["curves"][0]["points"][0]["bytes"] = "<b>"
    bad["curves"][1]["points"] = "none"
    bad["curves"].append({"layer": None, "technique": "<i>new</i>", "setting": "$\\frac{$", "points": [{}]})
    bad["noise"][0]["points"].append({"scale": -1, "val": True})
    bad["fisher"].append({"layer": "x", "trace": "big", "per_weight": -1})
    bad["spectra"].append({"layer": "$\\frac{$", "dense": [1.0, "a"], "pruned": [3.0, 1.0], "rank90_dense": None})
    bad["spectra"].append("not a dict")
    parsed = check_page(analysis_page(bad))
    assert "Technique <i>new</i>" in parsed.joined  # escaped text, not a tag


def test_run_page_from_a_result_escapes_the_recipe_and_meta(compressed, tmp_path):
    page = run_page(compressed)
    parsed = check_page(page)
    assert parsed.images == 3  # stages, bytes per tensor, streams against entropy
    assert HOSTILE in parsed.joined and parsed.joined.count(HOSTILE) >= 3  # title, recipe, model
    text = parsed.joined
    for layer in ("fc1.weight", "fc2.weight", "fc3.weight", "fc1.bias"):
        assert layer in text
    assert f"{compressed.file_bytes:,} B" in text and f"{compressed.ratio:.1f}×" in text
    for s in compressed.stages:
        assert s.stage in text
    # every stream with its entropy, from the decoded file
    n_streams = sum(len(t.streams) for t in compressed.tensors)
    assert text.count("huffman") >= n_streams and "+" in text
    out = tmp_path / "sub" / "run.html"
    assert write_page(out, page) == out.stat().st_size and out.read_text(encoding="utf-8") == page


def test_run_page_from_the_file_alone_and_from_the_dict_alone(compressed):
    alone = check_page(run_page(None, compressed.data))
    assert alone.images == 2 and "Stages" not in alone.joined and "--run RUN.json" in alone.joined
    assert HOSTILE in alone.joined  # from the file's meta (recipe and model)
    d = compressed.to_dict()
    from_dict = check_page(run_page(d))
    assert from_dict.images == 3 and "Bytes per layer" in from_dict.joined
    mismatch = check_page(run_page({**d, "file_bytes": 7}, compressed.data))
    assert "probably of another file" in mismatch.joined
    with pytest.raises(ValueError):
        run_page(None, None)


def test_run_page_survives_a_hostile_run_dict(compressed):
    d = compressed.to_dict()
    d["stages"] = [{"stage": HOSTILE, "file_bytes": "x", "val_accuracy": math.inf}, "junk",
                   {"stage": "ok", "file_bytes": 10, "val_accuracy": 0.5, "test_accuracy": None}]
    d["layers"] = [{"name": HOSTILE, "shape": "<x>", "index_bytes": None}]
    d["streams"] = [{"tensor": HOSTILE, "coded_bytes": "1"}]
    d["split_sizes"] = "all"
    d["final_test_metrics"] = {HOSTILE: "1"}
    parsed = check_page(run_page(d))
    assert HOSTILE in parsed.joined


def test_run_page_shows_fidelity_scores_as_the_command_line_does(compressed):
    """A match-embeddings run's mean cosine is a number, not a percentage."""
    d = {**compressed.to_dict(), "objective": "match-embeddings", "metric": "mean_cosine",
         "baseline_test_accuracy": 1.0, "final_test_accuracy": 0.98765, "final_test_metrics": {"mean_cosine": 0.98765}}
    text = check_page(run_page(d)).joined
    assert "0.9877" in text and "98.77%" not in text and "mean_cosine" in text
