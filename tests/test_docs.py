"""The README's commands and recipe must keep working: docs that drift from code are bugs."""

import re
import shlex
from pathlib import Path

import pytest

import deepshrink as ds
from deepshrink.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_readme_cli_commands_parse():
    commands = []
    for block in _blocks("bash"):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("deepshrink "):
                commands.append(shlex.split(line)[1:])
    assert len(commands) >= 5
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)
        assert callable(args.func)


def test_readme_recipe_is_valid(tmp_path):
    (block,) = _blocks("toml")
    path = tmp_path / "mine.toml"
    path.write_text(block)
    recipe = ds.load_recipe(path)
    assert [s.kind for s in recipe.stages] == ["prune", "share", "code"]


def test_readme_names_the_public_api():
    for name in re.findall(r"ds\.(\w+)\(", README):
        assert hasattr(ds, name), f"README uses ds.{name}, which deepshrink does not export"


@pytest.mark.parametrize("name", ds.builtin_recipes())
def test_builtin_recipes_are_documented(name):
    assert f"`{name}`" in README
