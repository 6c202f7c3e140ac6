"""info(): the same header checks as load, streams decoded only on request, a SHA-256 to pin;
every tensor row is its encoding's report."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest

import deepshrink as ds
from deepshrink.errors import CorruptStream
from deepshrink.fileformat.container import pack, unpack
from deepshrink.inspect import info, sha256
from deepshrink.util.limits import Limits

GOLDEN = Path(__file__).parent / "golden" / "lenet300-pruned-shared-v1.dsz"
SRC = Path(__file__).resolve().parents[2] / "src" / "deepshrink"


def test_info_reports_work_and_says_whether_streams_were_decoded():
    quick, full = info(GOLDEN), info(GOLDEN, decode=True)
    assert quick["streams_checked"] is False and full["streams_checked"] is True
    assert quick["macs_per_sample"] == 784 * 300 + 300 * 100 + 100 * 10
    assert "sha256" not in quick


def test_info_digest_is_the_files_sha256(tmp_path):
    want = hashlib.sha256(GOLDEN.read_bytes()).hexdigest()
    assert info(GOLDEN, digest=True)["sha256"] == want == sha256(GOLDEN.read_bytes())


def test_info_decodes_streams_only_when_asked(tmp_path):
    c = unpack(GOLDEN.read_bytes())
    header = {k: v for k, v in c.header.items() if k != "sections"}
    sections = {k: bytes(v) for k, v in c.sections.items()}
    sections["fc3.weight:sym"] = bytes(len(sections["fc3.weight:sym"]))
    path = tmp_path / "bad.dsz"
    path.write_bytes(pack(header, sections))
    assert info(path)["streams_checked"] is False
    with pytest.raises(CorruptStream):
        info(path, decode=True)


def test_tensor_rows_are_the_encodings_reports():
    quick, full = info(GOLDEN), info(GOLDEN, decode=True)
    loaded = ds.load(GOLDEN).dense_state_dict()
    c = unpack(GOLDEN.read_bytes())
    assert sorted(t["name"] for t in full["tensors"]) == sorted(f"fc{i}.{r}" for i in (1, 2, 3) for r in ("weight", "bias"))
    for q, f in zip(quick["tensors"], full["tensors"]):
        name = f["name"]
        assert f["nonzero"] == int((loaded[name] != 0).sum())
        assert q["sections"] == f["sections"] == {k: len(v) for k, v in c.sections.items() if k.split(":")[0] == name}
        assert f["bytes"] == f["index_bytes"] + f["weight_bytes"] == sum(f["sections"].values())
        if f["encoding"] == "codebook":
            assert (f["layout"], f["coder"], f["gap_bits"], f["codebook"]) == ("sparse", "huffman", 5, c.header["tensors"][name]["k"])
            assert q["nonzero"] is None  # only the streams tell
            for k, s in f["streams"].items():
                assert 0 < s["entropy_bytes"] <= s["coded_bytes"] and q["streams"][k]["entropy_bytes"] is None
        else:
            assert (f["encoding"], f["coder"], f["streams"]) == ("raw", "none", {})
            assert q["nonzero"] == f["nonzero"]  # raw values need no stream decoding


def test_fileformat_inspect_knows_nothing_about_networks():
    tree = ast.parse((SRC / "fileformat" / "inspect.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {m for m in imported if m and m.startswith("deepshrink")} <= {
        "deepshrink.fileformat.container", "deepshrink.storage", "deepshrink.inspect"}
    assert not any(isinstance(n, ast.Import) and any(a.name.startswith(("torch", "deepshrink")) for a in n.names)
                   for n in ast.walk(tree))


def test_info_limits_are_the_readers(tmp_path):
    with pytest.raises(ds.FormatError):
        info(GOLDEN, Limits(max_tensor_elements=1000))
