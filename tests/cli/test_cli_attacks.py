"""Every command that opens a file (info, eval, export) refuses every case of the attack corpus
with a typed FormatError, exit status 2, and no traceback, with and without --json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from deepshrink.cli import main
from deepshrink.errors import FormatError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "attacks"))
from attack_corpus import attack_cases  # noqa: E402


def _subclass_names(cls: type) -> set[str]:
    return {cls.__name__}.union(*(_subclass_names(c) for c in cls.__subclasses__()))


FORMAT_ERRORS = _subclass_names(FormatError)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return attack_cases(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def digits(tmp_path_factory, npz):
    return npz(tmp_path_factory.mktemp("data") / "digits.npz", n_train=40, n_test=20)


def _commands(path: Path, npz: Path, out: Path) -> dict[str, list[str]]:
    return {
        "info": ["info", str(path), "--check-streams"],
        "eval": ["eval", str(path), "--data", str(npz)],
        "export": ["export", str(path), "-o", str(out / f"{path.stem}.onnx")],
    }


@pytest.mark.parametrize("command", ["info", "eval", "export"])
def test_every_attack_is_a_typed_error_from_every_command(corpus, digits, tmp_path, capsys, command):
    for name, path in corpus:
        argv = _commands(path, digits, tmp_path)[command]
        code = main([*argv, "--json", "--no-progress"])
        captured = capsys.readouterr()
        lines = [line for line in captured.out.splitlines() if line.strip()]
        assert len(lines) == 1, (name, captured.out)
        out = json.loads(lines[0])
        assert code == 2, (name, out)
        assert out["type"] in FORMAT_ERRORS, (name, out)
        assert out["error"], name
        assert not list(tmp_path.glob("*.onnx")), name  # nothing written for a refused file


def test_no_traceback_without_json(corpus, digits, tmp_path, capsys):
    for name, path in corpus:
        for argv in _commands(path, digits, tmp_path).values():
            code = main([*argv, "--no-progress"])
            err = capsys.readouterr().err
            assert code == 2, (name, argv)
            assert "Traceback" not in err and err.startswith("error: "), (name, err)
