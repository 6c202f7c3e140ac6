"""info(): the same header checks as load, streams decoded only on request, a SHA-256 to pin."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from deepshrink.errors import CorruptStream
from deepshrink.fileformat.container import pack, unpack
from deepshrink.fileformat.inspect import info, sha256

GOLDEN = Path(__file__).parent / "golden" / "lenet300-pruned-shared-v1.dsz"


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
