"""Regenerate the golden file (only when the format changes on purpose):

    .venv/bin/python tests/fileformat/make_golden.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_model_file import GOLDEN, SPEC, tiny_compressed_model  # noqa: E402

from deepshrink.pipeline.pack import pack_model  # noqa: E402

GOLDEN.mkdir(exist_ok=True)
data, _ = pack_model(tiny_compressed_model(), SPEC)
(GOLDEN / "lenet300-pruned-shared-v1.dsz").write_bytes(data)
print(f"wrote {len(data)} bytes")
