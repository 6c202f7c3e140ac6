"""``deepshrink report`` and ``compress --report`` on a real small .dsz, and their bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from deepshrink.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from report_helpers import HOSTILE, check_page  # noqa: E402


def run_cli(capsys, *argv: str) -> tuple[int, dict, str]:
    code = main([*argv, "--json", "--no-progress"])
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.strip()]
    assert len(lines) == 1, captured.out  # exactly one JSON object
    return code, json.loads(lines[0]), captured.err


def test_report_of_a_file_with_and_without_its_run(compressed, tmp_path, capsys):
    dsz = tmp_path / "m.dsz"
    dsz.write_bytes(compressed.data)
    run_json = tmp_path / "run.json"
    run_json.write_text(json.dumps({"command": "compress", "output": str(dsz), **compressed.to_dict()}))

    code, out, _ = run_cli(capsys, "report", str(dsz), "-o", str(tmp_path / "alone.html"))
    assert code == 0 and out["file_bytes"] == len(compressed.data) and out["run"] is None
    alone = (tmp_path / "alone.html").read_text(encoding="utf-8")
    assert out["bytes"] == len(alone.encode()) and check_page(alone).images == 2

    code, out, _ = run_cli(capsys, "report", str(dsz), "-o", str(tmp_path / "out" / "run.html"), "--run",
                           str(run_json))
    assert code == 0 and out["run"] == str(run_json) and not out["evaluated"]
    parsed = check_page((tmp_path / "out" / "run.html").read_text(encoding="utf-8"))
    assert parsed.images == 3 and HOSTILE in parsed.joined and "Stages" in parsed.joined


def test_report_scores_the_file_with_data(compressed, tmp_path, capsys, fashion):
    dsz = tmp_path / "m.dsz"
    dsz.write_bytes(compressed.data)
    code, out, _ = run_cli(capsys, "report", str(dsz), "-o", str(tmp_path / "r.html"), "--data", "fashion-mnist",
                           "--limit", "1000")
    assert code == 0 and out["evaluated"] and 0.3 < out["score"] <= 1
    text = check_page((tmp_path / "r.html").read_text(encoding="utf-8")).joined
    assert "this file on fashion-mnist" in text and f"{100 * out['score']:.2f}%" in text


def test_compress_writes_the_report(weights, hostile_recipe, tmp_path, capsys, fashion):
    dsz, html = tmp_path / "c.dsz", tmp_path / "c.html"
    code, out, _ = run_cli(capsys, "compress", "--model", "lenet-300-100", "--weights", str(weights), "--data",
                           "fashion-mnist", "--limit", "600", "--recipe", str(hostile_recipe), "-o", str(dsz),
                           "--report", str(html))
    assert code == 0 and out["report"] == {"path": str(html), "bytes": html.stat().st_size}
    parsed = check_page(html.read_text(encoding="utf-8"))
    assert parsed.images == 3 and HOSTILE in parsed.joined
    assert f"{out['file_bytes']:,} B" in parsed.joined and "fashion-mnist" in parsed.joined


def test_bad_input_is_a_clean_error(compressed, tmp_path, capsys):
    dsz = tmp_path / "m.dsz"
    dsz.write_bytes(compressed.data)
    not_dsz = tmp_path / "x.dsz"
    not_dsz.write_text("hello")
    not_json = tmp_path / "run.json"
    not_json.write_bytes(b"\xff\xfe not json")
    list_json = tmp_path / "list.json"
    list_json.write_text("[1, 2]")
    failed = tmp_path / "failed.json"
    failed.write_text(json.dumps({"command": "compress", "error": "boom"}))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    out_html = tmp_path / "r.html"
    cases = [
        (("report", str(tmp_path / "missing.dsz"), "-o", str(out_html)), "FileNotFoundError", "missing.dsz"),
        (("report", str(not_dsz), "-o", str(out_html)), "BadMagic", "not a deepshrink file"),
        (("report", str(dsz), "-o", str(out_html), "--run", str(not_json)), "ConfigError", "is not JSON"),
        (("report", str(dsz), "-o", str(out_html), "--run", str(list_json)), "ConfigError", "not the output of"),
        (("report", str(dsz), "-o", str(out_html), "--run", str(failed)), "ConfigError", "boom"),
        (("report", str(dsz), "-o", str(out_html), "--run", str(deep)), "ConfigError", "is not JSON"),
        (("report", str(dsz), "-o", str(out_html), "--run", str(tmp_path / "none.json")), "FileNotFoundError", ""),
        (("report", str(dsz), "-o", str(tmp_path)), "IsADirectoryError", "is a folder"),
        (("report", str(dsz), "-o", str(dsz)), "ConfigError", "would overwrite"),
        (("report", str(dsz)), "UsageError", "--output"),
    ]
    for argv, kind, message in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and out["type"] == kind and message in out["error"], (argv, out)
        assert "Traceback" not in err
    assert not out_html.exists() and dsz.read_bytes() == compressed.data
    # without --json: one line on stderr, no traceback
    assert main(["report", str(not_dsz), "-o", str(out_html)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    # compress refuses a report that would overwrite its output, before any work
    code, out, _ = run_cli(capsys, "compress", "--model", "lenet-300-100", "--weights", str(dsz), "-o", str(dsz),
                           "--report", str(dsz))
    assert code == 2 and "would overwrite" in out["error"]
