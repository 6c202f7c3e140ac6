"""docs/format.md's header example is the golden file's real header and validates; its encoding
tables are generated from the encoding registry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from deepshrink.errors import InvalidHeader
from deepshrink.fileformat import Limits, parse_header
from deepshrink.fileformat.container import Container, unpack
from deepshrink.storage import check_descriptor
from deepshrink.storage.encodings import format_tables

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "lenet300-pruned-shared-v1.dsz"


def test_format_doc_header_example_parses_and_is_the_golden_header():
    (block,) = re.findall(r"## Header\n.*?```json\n(.*?)```", (ROOT / "docs" / "format.md").read_text(), re.S)
    example = json.loads(block)
    gold = unpack(GOLDEN.read_bytes())
    assert example == gold.header
    mf = parse_header(Container(example, gold.sections, gold.file_bytes, gold.header_bytes), Limits())
    assert [n.name for n in mf.graph.nodes] == ["flatten", "fc1", "relu1", "fc2", "relu2", "fc3"]


def test_format_doc_encoding_tables_are_the_registrys():
    """The per-encoding tables are generated from deepshrink.storage.encodings: regenerate them with
    ``format_tables()`` between the ``<!-- encodings -->`` markers when an encoding changes."""
    (block,) = re.findall(r"<!-- encodings:[^\n]*-->\n(.*?)<!-- /encodings -->", (ROOT / "docs" / "format.md").read_text(), re.S)
    assert block == format_tables()


def test_every_descriptor_of_the_doc_example_is_checked_by_its_registered_encoding():
    (block,) = re.findall(r"## Header\n.*?```json\n(.*?)```", (ROOT / "docs" / "format.md").read_text(), re.S)
    tensors = json.loads(block)["tensors"]
    names = {check_descriptor(name, desc, Limits()).encoding.name for name, desc in tensors.items()}
    assert names == {"raw", "codebook/sparse"}
    for name, desc in tensors.items():
        with pytest.raises(InvalidHeader, match="'dtype'"):  # the field issue 8 found missing
            check_descriptor(name, {k: v for k, v in desc.items() if k != "dtype"}, Limits())
