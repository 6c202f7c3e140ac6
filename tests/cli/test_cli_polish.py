"""The command line's everyday edges (issue 7, "CLI polish"): JSON on every failure, help with
defaults, the recipe list, readable narrow tables, output paths, threads, no tracebacks."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import deepshrink as ds
import deepshrink.cli as cli_module
from deepshrink.cli import build_parser, main, print_table


@pytest.mark.parametrize("argv", [
    ["train", "--data", "fashion-mnist"],                        # missing options
    ["info", "m.dsz", "--no-such-flag"],                          # unknown flag
    ["train", "--model", "lenet-5", "-o", "w", "--epochs", "x"],  # bad value
    ["train", "--model", "lenet-5", "-o", "w", "--limit", "0"],   # --limit 0
    ["export", "m.dsz", "-o", "m.onnx", "--format", "tflite"],    # bad choice
    [],                                                           # no command
])
def test_usage_errors_are_one_json_object(capsys, argv):
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert code == 2
    out = json.loads(captured.out)  # the whole of stdout is one JSON object
    assert out["type"] == "UsageError" and out["error"]
    assert "usage:" not in captured.out


def test_usage_errors_without_json_print_usage_on_stderr(capsys):
    assert main(["train", "--model", "lenet-5", "-o", "w", "--limit", "0"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("usage: deepshrink train")
    assert "--limit: must be ≥ 1" in captured.err and "leave --limit out" in captured.err


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_has_help_and_shows_its_default():
    for name, p in _subparsers(build_parser()).items():
        text = p.format_help()
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.dest} has no help"
            if action.option_strings and not action.required:
                shown = action.default is not None or "default" in action.help
                assert shown, f"{name} {action.option_strings[0]} shows no default"
        assert "fashion-mnist)" in text or name in ("eval", "info", "export", "recipes", "models")


def test_compress_help_lists_the_builtin_recipes(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compress", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in ds.builtin_recipes():
        assert f"  {name} " in text
    assert "Truncated SVD" in text  # with their descriptions


def test_recipes_command_lists_names_and_descriptions(cli):
    code, out = cli("recipes")
    assert code == 0 and [r["name"] for r in out["recipes"]] == ds.builtin_recipes()
    assert all(r["description"] and r["stages"] for r in out["recipes"])
    assert out["threads"] >= 1 and out["warnings"] == []


def test_threads_option_and_environment(cli, monkeypatch):
    assert cli("recipes", "--threads", "1")[1]["threads"] == 1
    monkeypatch.setenv("DEEPSHRINK_THREADS", "1")
    assert cli("recipes")[1]["threads"] == 1
    monkeypatch.setenv("DEEPSHRINK_THREADS", "lots")
    code, out = cli("recipes")
    assert code == 2 and "DEEPSHRINK_THREADS" in out["error"]


NAMES = ["features.block1.depthwise_conv.weight", "features.block1.depthwise_conv.bias", "classifier.fc.weight"]


@pytest.mark.parametrize("width", [30, 60, 200])
def test_tables_never_cut_tensor_names(width):
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False)
    print_table(console, "tensors", ("tensor", "shape", "bytes", "ratio"),
                [(n, "300×784", "12.3 KB", "40.1×") for n in NAMES], left=("tensor",))
    text = buf.getvalue()
    assert all(n in text for n in NAMES), text
    assert "…" not in text
    assert ("┃" in text) == (width == 200)  # a table when it fits, plain lines otherwise


def test_output_that_is_a_folder_is_refused_before_any_work(cli, tmp_path):
    code, out = cli("train", "--model", "lenet-5", "--data", str(tmp_path / "missing.npz"), "-o", str(tmp_path))
    assert code == 2 and "is a folder" in out["error"]  # not the missing data: nothing was loaded
    code, out = cli("export", str(tmp_path / "m.dsz"), "-o", str(tmp_path))
    assert code == 2 and "is a folder" in out["error"]


def test_train_reports_split_sizes_warns_on_a_large_validation_split_and_epochs_0(cli, tmp_path, npz):
    data = npz(tmp_path / "d.npz", n_train=100, n_test=20)
    out_path = tmp_path / "new" / "w.safetensors"  # the missing folder is created
    code, out = cli("train", "--model", "lenet-300-100", "--data", str(data), "--val-size", "0.4",
                    "--epochs", "0", "-o", str(out_path))
    assert code == 0 and out_path.exists()
    assert out["split_sizes"] == {"train": 60, "val": 40, "test": 20}
    assert out["best_epoch"] is None and len(out["warnings"]) == 1 and "validation split" in out["warnings"][0]
    code, out = cli("train", "--model", "lenet-300-100", "--data", str(data), "--val-size", "0", "--epochs", "1",
                    "-o", str(out_path))
    assert code == 0 and out["split_sizes"]["val"] == 0 and out["val_accuracy"] is None  # NaN is not JSON


@pytest.mark.parametrize("val_size, expected, warns", [(None, 16, False), ("30", 30, True), ("0.25", 20, False),
                                                        ("0", 0, False)])
def test_limit_keeps_the_validation_size_asked_for(cli, tmp_path, npz, val_size, expected, warns):
    """--limit cuts the data down; --val-size still sets the validation split, and the warning about
    a large split is judged on the cut-down data (30 of 110 is over a quarter, 20 of 100 is not)."""
    data = npz(tmp_path / "d.npz", n_train=400, n_test=100)
    argv = ["train", "--model", "lenet-300-100", "--data", str(data), "--limit", "80", "--epochs", "0",
            "-o", str(tmp_path / "w.safetensors")]
    code, out = cli(*argv, *(["--val-size", val_size] if val_size else []))
    assert code == 0 and out["split_sizes"] == {"train": 80, "val": expected, "test": 16}
    assert len(out["warnings"]) == warns and (not warns or f"{expected} of {80 + expected}" in out["warnings"][0])


def test_an_unexpected_exception_is_one_line_not_a_traceback(capsys, monkeypatch, cli):
    def boom(run):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(cli_module, "cmd_recipes", boom)
    assert main(["recipes"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "kaboom" in err and "bug" in err and len(err.strip().splitlines()) <= 2
    code, out = cli("recipes")
    assert code == 1 and out["type"] == "RuntimeError" and "please report" in out["error"]


def test_ctrl_c_exits_130_without_a_traceback(capsys, monkeypatch):
    def interrupted(run):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "cmd_recipes", interrupted)
    assert main(["recipes"]) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_info_sha256_pins_the_file(cli, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent.parent / "fileformat"))
    from test_model_file import SPEC, tiny_compressed_model

    path = tmp_path / "m.dsz"
    ds.save_model(tiny_compressed_model(), path, SPEC)
    code, out = cli("info", str(path), "--sha256")
    assert code == 0 and out["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert out["streams_checked"] is False and cli("info", str(path), "--check-streams")[1]["streams_checked"] is True
    code, out = cli("export", str(path), "-o", str(tmp_path / "raw.onnx"), "--with-preprocessing")
    assert code == 0 and out["preprocessing"] is True and out["argmax_agreement"] == 1.0


def test_installed_command_finds_a_model_module_in_the_working_directory(tmp_path, npz):
    exe = shutil.which("deepshrink", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the deepshrink console script is not installed")
    (tmp_path / "usermodels.py").write_text(
        "from torch import nn\n"
        "def small():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n"
    )
    npz(tmp_path / "d.npz", n_train=50, n_test=10)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([exe, "train", "--model", "usermodels:small", "--data", "d.npz", "--epochs", "0",
                        "-o", "w.safetensors", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["parameters"] == 7850 and (tmp_path / "w.safetensors").exists()


@pytest.mark.parametrize("as_json", [True, False])
def test_a_reader_that_goes_away_gets_no_traceback(tmp_path, as_json):
    """``deepshrink ... | head``: the pipe closes before the command writes; it stops quietly."""
    proc = subprocess.Popen([sys.executable, "-m", "deepshrink", "recipes", *(["--json"] if as_json else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    proc.stdout.close()  # before the interpreter has even imported deepshrink
    err = proc.stderr.read().decode()
    proc.stderr.close()
    code = proc.wait(timeout=120)
    assert "Traceback" not in err and "Error" not in err, err
    assert code in (1, 141)  # rich handles a broken pipe itself with status 1; our JSON path says 128 + SIGPIPE
