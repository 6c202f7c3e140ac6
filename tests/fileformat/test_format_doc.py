"""docs/format.md's header example is the golden file's real header, and it validates."""

from __future__ import annotations

import json
import re
from pathlib import Path

from deepshrink.fileformat import Limits, parse_header
from deepshrink.fileformat.container import Container, unpack

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "lenet300-pruned-shared-v1.dsz"


def test_format_doc_header_example_parses_and_is_the_golden_header():
    (block,) = re.findall(r"## Header\n.*?```json\n(.*?)```", (ROOT / "docs" / "format.md").read_text(), re.S)
    example = json.loads(block)
    gold = unpack(GOLDEN.read_bytes())
    assert example == gold.header
    mf = parse_header(Container(example, gold.sections, gold.file_bytes, gold.header_bytes), Limits())
    assert [n.name for n in mf.graph.nodes] == ["flatten", "fc1", "relu1", "fc2", "relu2", "fc3"]
