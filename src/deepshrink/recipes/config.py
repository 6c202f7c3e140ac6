"""Recipes: a named list of stages (prune, lowrank, share, code) with their settings, read from TOML.

The stage kinds, their settings and their order are the stage classes' own
(:mod:`deepshrink.recipes.stages`); this module reads and writes whole recipes.

Versions: a recipe file may say ``version = 2`` (:data:`RECIPE_VERSION`, what :meth:`Recipe.to_dict`
writes); a file without ``version`` is version 1 (every recipe written before versions existed)
and loads to the same stages. A version this deepshrink does not know is refused rather than read
with a meaning its author did not intend.

The objective (classification, fidelity to the dense model's logits or embeddings) is not part of
a recipe: it is the model's task, chosen with the model and its data (``compress(objective=...)``),
while one recipe serves models of every task.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from deepshrink.coding import Coder
from deepshrink.errors import ConfigError
from deepshrink.recipes.stages import STAGES, CodeStage, Stage, check_keys

#: The recipe format this deepshrink writes; it reads versions 1..RECIPE_VERSION.
RECIPE_VERSION = 2


@dataclass(frozen=True)
class Recipe:
    """A compression recipe: stages run in order (each stage class's ``order``: prune, lowrank,
    share, code), each kind at most once."""

    name: str
    stages: tuple[Stage, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if not all(isinstance(s, Stage) for s in self.stages):
            raise ConfigError(f"recipe {self.name!r}: stages must be stage objects of {sorted(STAGES)}")
        kinds = [s.kind for s in self.stages]
        if not kinds:
            raise ConfigError(f"recipe {self.name!r} has no stages")
        orders = [s.order for s in self.stages]
        if orders != sorted(orders) or len(set(kinds)) != len(kinds):
            expected = ", ".join(sorted(STAGES, key=lambda k: STAGES[k].order))
            raise ConfigError(
                f"recipe {self.name!r}: stages must appear at most once each, in the order {expected}; got {kinds}"
            )

    @property
    def distills(self) -> bool:
        """Whether any (re)training stage learns from the dense model's soft targets."""
        return any(s.distills for s in self.stages)

    @property
    def code_stage(self) -> CodeStage:
        """The recipe's code stage, or fixed-length coding with the default gap widths without one."""
        return next((s for s in self.stages if s.kind == CodeStage.kind), CodeStage(coder=Coder.FIXED))

    def with_coder(self, coder: Coder | str) -> Recipe:
        """The same recipe with another entropy coder in its code stage."""
        stages = tuple(replace(s, coder=Coder(coder)) if s.kind == CodeStage.kind else s for s in self.stages)
        return Recipe(self.name, stages, self.description)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as a table of plain values, every setting written, at :data:`RECIPE_VERSION`:
        ``Recipe.from_dict(r.to_dict()) == r``."""
        return {"version": RECIPE_VERSION, "name": self.name, "description": self.description,
                "stages": [s.to_dict() for s in self.stages]}

    def to_toml(self) -> str:
        """The recipe as a TOML file that :func:`load_recipe` reads back to an equal recipe."""
        return dump_toml(self.to_dict())

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "recipe") -> Recipe:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a table with name, description and [[stages]], got {_show(raw)}")
        check_keys(raw, {"version", "name", "description", "stages"}, where)
        version = raw.get("version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= RECIPE_VERSION:
            raise ConfigError(f"{where}: version must be an integer in 1..{RECIPE_VERSION} (this deepshrink reads "
                              f"recipes up to version {RECIPE_VERSION}), got {_show(version)}")
        stages_raw = raw.get("stages")
        if not isinstance(stages_raw, list):
            raise ConfigError(f"{where}: expected a list of [[stages]] tables")
        stages = []
        for i, s in enumerate(stages_raw):
            w = f"{where}: stage {i + 1}"
            kind = s.get("kind") if isinstance(s, dict) else None
            if not isinstance(kind, str) or kind not in STAGES:
                raise ConfigError(f"{w}: 'kind' must be one of {sorted(STAGES)}, got {_show(kind)}")
            try:
                stages.append(STAGES[kind].parse(s, f"{w} ({kind})"))
            except ConfigError as exc:  # the stage's own checks: say which file and stage
                raise ConfigError(str(exc) if str(exc).startswith(w) else f"{w} ({kind}): {exc}") from None
        name = raw.get("name", "custom")
        description = raw.get("description", "")
        if not isinstance(name, str) or not isinstance(description, str):
            raise ConfigError(f"{where}: name and description must be strings")
        return cls(name, tuple(stages), description)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ConfigError(f"a recipe value must be finite, got {v!r}")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string (escapes included)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise ConfigError(f"a recipe value must be a boolean, number, string, array or table, got {type(v).__name__}")


def dump_toml(recipe: dict[str, Any]) -> str:
    """TOML text of a recipe table (:meth:`Recipe.to_dict`): top-level values, then one
    ``[[stages]]`` table per stage with its sub-tables; per-layer settings as inline tables.
    Only the shapes a recipe has are written (no TOML writer is a dependency)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in recipe.items() if k != "stages"]
    for stage in recipe.get("stages", []):
        lines += ["", "[[stages]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in stage.items() if not isinstance(v, dict)]
        for k, v in stage.items():
            if isinstance(v, dict):
                lines += [f"[stages.{k}]"] + [f"{json.dumps(n)} = {_toml_value(x)}" for n, x in v.items()]
    return "\n".join(lines) + "\n"


def _show(value: Any, limit: int = 60) -> str:
    """``repr`` of a value from an untrusted file, cut to ``limit`` characters (never recursing)."""
    text = repr(value) if isinstance(value, (str, int, float, bool, type(None))) else f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def builtin_recipes() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("deepshrink.recipes").iterdir() if p.name.endswith(".toml"))


def load_recipe(spec: str | os.PathLike) -> Recipe:
    """A built-in recipe by name (see :func:`builtin_recipes`) or a path to a TOML file.

    Everything wrong with the file (not UTF-8, not TOML, nested too deeply, bad values) is a
    :class:`~deepshrink.errors.ConfigError` naming the file."""
    text: str
    where: str
    if not isinstance(spec, (str, os.PathLike)):
        raise ConfigError(
            f"a recipe is a built-in name {builtin_recipes()} or a path to a TOML file, got {_show(spec)}"
        )
    if isinstance(spec, str) and spec in builtin_recipes():
        text = resources.files("deepshrink.recipes").joinpath(f"{spec}.toml").read_text("utf-8")
        where = f"built-in recipe {spec!r}"
    else:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"recipe {str(spec)!r} is neither a built-in recipe {builtin_recipes()} nor a file")
        where = f"recipe file {str(path)!r}"
        try:
            text = path.read_text("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{where} is not UTF-8 text (byte {exc.start}); TOML files must be UTF-8") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{where} nests arrays or tables too deeply to read; a recipe needs a few levels") from None
    return Recipe.from_dict(raw, where)
