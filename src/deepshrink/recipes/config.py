"""Recipes: a named list of stages (prune, share, code) with their settings, read from TOML."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from deepshrink.coding import Coder
from deepshrink.errors import ConfigError
from deepshrink.recipes.rules import LayerRules
from deepshrink.storage.tensor_codec import DEFAULT_GAP_BITS
from deepshrink.share.kmeans import INITS
from deepshrink.train.loop import TrainConfig

NUM = (int, float)


def _train(raw: Any, where: str, default: TrainConfig) -> TrainConfig:
    if raw is None:
        return default
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table of training settings")
    fields = set(TrainConfig.__dataclass_fields__)
    unknown = set(raw) - fields
    if unknown:
        raise ConfigError(f"{where}: unknown settings {sorted(unknown)}; allowed: {sorted(fields)}")
    try:
        return TrainConfig(**{**default.to_dict(), **raw})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _keys(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")


@dataclass(frozen=True)
class PruneStage:
    """Iterative magnitude pruning: ``steps`` cycles of prune → retrain, with per-layer targets
    ``sparsity`` (fraction pruned) or ``quality`` (threshold = quality × std of the layer)."""

    layers: LayerRules
    steps: int = 3
    retrain: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, lr=1e-4))
    kind: str = "prune"

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= 100:
            raise ConfigError(f"prune: steps must be an integer in 1..100, got {self.steps!r}")
        for pattern, s in self.layers.rules:
            if "sparsity" in s and "quality" in s:
                raise ConfigError(f"prune: layers.{pattern} gives both sparsity and quality; choose one")
            if "sparsity" in s and not 0 <= s["sparsity"] < 1:
                raise ConfigError(f"prune: layers.{pattern}.sparsity must be in [0, 1), got {s['sparsity']}")
            if "quality" in s and not 0 <= s["quality"] <= 100:
                raise ConfigError(f"prune: layers.{pattern}.quality must be in [0, 100], got {s['quality']}")

    @classmethod
    def parse(cls, raw: dict[str, Any], where: str) -> PruneStage:
        _keys(raw, {"kind", "steps", "retrain", "layers"}, where)
        return cls(
            LayerRules.parse(raw.get("layers"), {"sparsity": NUM, "quality": NUM}, where),
            raw.get("steps", 3),
            _train(raw.get("retrain"), f"{where}.retrain", TrainConfig(epochs=2, lr=1e-4)),
        )


@dataclass(frozen=True)
class ShareStage:
    """k-means weight sharing with ``bits`` per layer (2**bits - 1 centroids plus zero), then
    centroid fine-tuning. With ``float16`` the centroids and all other parameters (biases) are
    rounded to float16 afterwards, halving their stored bytes."""

    layers: LayerRules
    init: str = "linear"
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, lr=1e-4))
    float16: bool = False
    kind: str = "share"

    def __post_init__(self) -> None:
        if not isinstance(self.float16, bool):
            raise ConfigError(f"share: float16 must be true or false, got {self.float16!r}")
        if self.init not in INITS:
            raise ConfigError(f"share: init must be one of {INITS}, got {self.init!r}")
        for pattern, s in self.layers.rules:
            if "bits" in s and not 1 <= s["bits"] <= 16:
                raise ConfigError(f"share: layers.{pattern}.bits must be in 1..16, got {s['bits']}")

    @classmethod
    def parse(cls, raw: dict[str, Any], where: str) -> ShareStage:
        _keys(raw, {"kind", "init", "finetune", "layers", "float16"}, where)
        return cls(
            LayerRules.parse(raw.get("layers"), {"bits": int}, where),
            raw.get("init", "linear"),
            _train(raw.get("finetune"), f"{where}.finetune", TrainConfig(epochs=2, lr=1e-4)),
            raw.get("float16", False),
        )


@dataclass(frozen=True)
class CodeStage:
    """Entropy coding of the sparse layout: ``coder`` for every stream, ``gap_bits`` per layer."""

    layers: LayerRules = field(
        default_factory=lambda: LayerRules(tuple((f"_{kind}", {"gap_bits": g}) for kind, g in DEFAULT_GAP_BITS.items()))
    )
    coder: Coder = Coder.HUFFMAN
    kind: str = "code"

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "coder", Coder(self.coder))
        except ValueError:
            raise ConfigError(f"code: coder must be one of {[c.value for c in Coder]}, got {self.coder!r}") from None
        for pattern, s in self.layers.rules:
            g = s.get("gap_bits", "auto")  # absent: the kind's default, valid
            if not (g == "auto" or (isinstance(g, int) and not isinstance(g, bool) and 1 <= g <= 16)):
                raise ConfigError(f"code: layers.{pattern}.gap_bits must be 1..16 or \"auto\", got {g!r}")

    @classmethod
    def parse(cls, raw: dict[str, Any], where: str) -> CodeStage:
        _keys(raw, {"kind", "coder", "layers"}, where)
        layers = raw.get("layers")
        return cls(
            LayerRules.parse(layers, {"gap_bits": (int, str)}, where) if layers is not None else CodeStage().layers,
            raw.get("coder", "huffman"),
        )


@dataclass(frozen=True)
class LowRankStage:
    """Low-rank factorisation, then fine-tuning with the zero pattern of sparse (SLR) factors fixed.

    Per layer: ``method`` (``svd`` or ``slr`` for linear layers, ``spatial``, ``tucker`` or ``cp``
    for convolutions; the stage's ``method`` is the default); the rank as ``rank`` (int = absolute,
    float = fraction of the layer's weights kept, non-zeros for SLR), ``energy`` (share of the
    squared singular values kept) or ``max_drop`` (the smallest rank whose validation accuracy,
    before fine-tuning and with only that layer factorised, drops by at most this many points);
    or ``skip = true``. SLR also takes ``reduced_rank`` (r_s: int, or fraction of the rank),
    ``unimportant`` (fraction of input and of output neurons that keep only r_s components) and
    ``importance`` (``weight``, ``activation`` or ``taylor``; the stage's ``importance`` is the
    default), scored on ``calibration`` training samples."""

    layers: LayerRules
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, lr=3e-4))
    method: str = "svd"
    importance: str = "weight"
    calibration: int = 2048
    kind: str = "lowrank"

    def __post_init__(self) -> None:
        from deepshrink.lowrank import IMPORTANCE, METHODS

        if self.method not in METHODS:
            raise ConfigError(f"lowrank: method must be one of {METHODS}, got {self.method!r}")
        if self.importance not in IMPORTANCE:
            raise ConfigError(f"lowrank: importance must be one of {IMPORTANCE}, got {self.importance!r}")
        if isinstance(self.calibration, bool) or not isinstance(self.calibration, int) or self.calibration < 1:
            raise ConfigError(f"lowrank: calibration (samples) must be a positive integer, got {self.calibration!r}")
        for pattern, s in self.layers.rules:
            where = f"lowrank: layers.{pattern}"
            given = [k for k in ("rank", "energy", "max_drop") if k in s]
            if len(given) > 1:
                raise ConfigError(f"{where} gives {' and '.join(given)}; choose one")
            r = s.get("rank", 1)
            if isinstance(r, bool) or (isinstance(r, int) and r < 1) or (isinstance(r, float) and not 0 < r <= 1):
                raise ConfigError(f"{where}.rank must be an int ≥ 1 or a fraction in (0, 1], got {r!r}")
            if "energy" in s and not 0 < s["energy"] <= 1:
                raise ConfigError(f"{where}.energy must be in (0, 1], got {s['energy']!r}")
            if "max_drop" in s and not 0 <= s["max_drop"] <= 100:
                raise ConfigError(f"{where}.max_drop (accuracy points) must be in [0, 100], got {s['max_drop']!r}")
            if s.get("method", self.method) not in METHODS:
                raise ConfigError(f"{where}.method must be one of {METHODS}, got {s['method']!r}")
            if s.get("importance", self.importance) not in IMPORTANCE:
                raise ConfigError(f"{where}.importance must be one of {IMPORTANCE}, got {s['importance']!r}")
            rs = s.get("reduced_rank", 0.5)
            if isinstance(rs, int) and rs < 0 or isinstance(rs, float) and not 0 <= rs < 1:
                raise ConfigError(f"{where}.reduced_rank must be an int ≥ 0 or a fraction in [0, 1), got {rs!r}")
            if not 0 <= s.get("unimportant", 0.5) < 1:
                raise ConfigError(f"{where}.unimportant must be a fraction in [0, 1), got {s['unimportant']!r}")

    @classmethod
    def parse(cls, raw: dict[str, Any], where: str) -> LowRankStage:
        _keys(raw, {"kind", "method", "importance", "calibration", "finetune", "layers"}, where)
        allowed = {"method": str, "rank": NUM, "energy": NUM, "max_drop": NUM, "skip": bool, "reduced_rank": NUM,
                   "unimportant": NUM, "importance": str}
        return cls(
            LayerRules.parse(raw.get("layers"), allowed, where),
            _train(raw.get("finetune"), f"{where}.finetune", TrainConfig(epochs=3, lr=3e-4)),
            raw.get("method", "svd"),
            raw.get("importance", "weight"),
            raw.get("calibration", 2048),
        )


Stage = PruneStage | LowRankStage | ShareStage | CodeStage
_STAGES = {"prune": PruneStage, "lowrank": LowRankStage, "share": ShareStage, "code": CodeStage}
_ORDER = {"prune": 0, "lowrank": 1, "share": 2, "code": 3}


@dataclass(frozen=True)
class Recipe:
    """A compression recipe: stages run in order (prune before share before code)."""

    name: str
    stages: tuple[Stage, ...]
    description: str = ""

    def __post_init__(self) -> None:
        kinds = [s.kind for s in self.stages]
        if not kinds:
            raise ConfigError(f"recipe {self.name!r} has no stages")
        if [_ORDER[k] for k in kinds] != sorted(_ORDER[k] for k in kinds) or len(set(kinds)) != len(kinds):
            raise ConfigError(
                f"recipe {self.name!r}: stages must appear at most once each, in the order prune, lowrank, share, "
                f"code; got {kinds}"
            )

    @property
    def distills(self) -> bool:
        """Whether any (re)training stage learns from the dense model's soft targets."""
        return any(
            isinstance(s, PruneStage) and s.retrain.distill > 0
            or isinstance(s, (LowRankStage, ShareStage)) and s.finetune.distill > 0
            for s in self.stages
        )

    @property
    def code_stage(self) -> CodeStage:
        for s in self.stages:
            if isinstance(s, CodeStage):
                return s
        return CodeStage(coder=Coder.FIXED)

    def with_coder(self, coder: Coder | str) -> Recipe:
        """The same recipe with another entropy coder in its code stage."""
        stages = tuple(CodeStage(s.layers, Coder(coder)) if isinstance(s, CodeStage) else s for s in self.stages)
        return Recipe(self.name, stages, self.description)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "recipe") -> Recipe:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a table with name, description and [[stages]], got {_show(raw)}")
        _keys(raw, {"name", "description", "stages"}, where)
        stages_raw = raw.get("stages")
        if not isinstance(stages_raw, list):
            raise ConfigError(f"{where}: expected a list of [[stages]] tables")
        stages = []
        for i, s in enumerate(stages_raw):
            w = f"{where}: stage {i + 1}"
            kind = s.get("kind") if isinstance(s, dict) else None
            if not isinstance(kind, str) or kind not in _STAGES:
                raise ConfigError(f"{w}: 'kind' must be one of {sorted(_STAGES)}, got {_show(kind)}")
            try:
                stages.append(_STAGES[kind].parse(s, f"{w} ({kind})"))
            except ConfigError as exc:  # the stage's own checks: say which file and stage
                raise ConfigError(str(exc) if str(exc).startswith(w) else f"{w} ({kind}): {exc}") from None
        name = raw.get("name", "custom")
        description = raw.get("description", "")
        if not isinstance(name, str) or not isinstance(description, str):
            raise ConfigError(f"{where}: name and description must be strings")
        return cls(name, tuple(stages), description)


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
