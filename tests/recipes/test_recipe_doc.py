"""docs/recipes.md documents every registered stage from its class."""

import re
from pathlib import Path

from deepshrink.recipes import STAGES
from deepshrink.recipes.docs import stage_tables

DOC = Path(__file__).parents[2] / "docs" / "recipes.md"


def test_the_stage_reference_is_the_registrys():
    """Regenerate the block between the ``<!-- stages -->`` markers with ``stage_tables()`` when a
    stage or one of its settings changes."""
    (block,) = re.findall(r"<!-- stages:[^\n]*-->\n(.*?)<!-- /stages -->", DOC.read_text(), re.S)
    assert block == stage_tables()


def test_every_stage_and_setting_is_named():
    text = stage_tables()
    for kind, cls in STAGES.items():
        assert f"### `{kind}`" in text
        for key in cls.settings:
            assert f"`{key}`" in text
