"""Per-layer rules: map layer names to settings.

Keys, from the most to the least specific: an exact layer name; ``"re:<regex>"`` (first match in
file order, ``re.fullmatch``); ``"_first"`` / ``"_last"`` (the first / last layer);
``"_<kind>"`` for every layer kind the graph's op registry declares (``"_conv"``, ``"_linear"``,
``"_embedding"``, ...; see :func:`deepshrink.prune.layer_kinds`); ``"_default"``. A layer that no key matches is left
alone by the stage. Settings found at several levels are merged, the more specific winning.

An exact name or regex that applies to no layer is almost always a typo (``fc9`` for ``fc2``);
:meth:`LayerRules.unused` finds them so that the pipeline can refuse the recipe before training.
Special keys may match nothing (``_conv`` in a model without convolutions).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from deepshrink.errors import ConfigError
from deepshrink.prune import layer_kinds


def special_keys() -> tuple[str, ...]:
    """The keys that are not layer names: ``_default``, ``_first``, ``_last`` and one per layer kind
    (read from the op registry, so a new layer kind is addressable as soon as its op exists)."""
    return ("_default", "_first", "_last", *(f"_{k}" for k in layer_kinds()))


@dataclass(frozen=True)
class LayerRules:
    """Ordered ``pattern → settings`` pairs, validated against a set of allowed setting keys."""

    rules: tuple[tuple[str, Mapping[str, Any]], ...] = ()

    @classmethod
    def parse(cls, raw: Any, allowed: Mapping[str, type | tuple[type, ...]], where: str) -> LayerRules:
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: 'layers' must be a table of pattern = {{settings}}")
        rules = []
        special = special_keys()
        for pattern, settings in raw.items():
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as exc:
                    raise ConfigError(f"{where}: bad regular expression {pattern!r}: {exc}") from None
            elif pattern.startswith("_") and pattern not in special:
                raise ConfigError(f"{where}: unknown special key {pattern!r}; expected one of {special}")
            if not isinstance(settings, Mapping):
                raise ConfigError(f"{where}: layers.{pattern} must be a table of settings")
            for key, value in settings.items():
                if key not in allowed:
                    raise ConfigError(f"{where}: layers.{pattern}: unknown setting {key!r}; allowed: {sorted(allowed)}")
                if isinstance(value, bool) and allowed[key] is not bool or not isinstance(value, allowed[key]):
                    raise ConfigError(f"{where}: layers.{pattern}.{key} has the wrong type: {value!r}")
            rules.append((pattern, dict(settings)))
        return cls(tuple(rules))

    def resolve(
        self, name: str, kind: str, order: Sequence[str], exclusive: Sequence[set[str]] = ()
    ) -> dict[str, Any]:
        """Merged settings for layer ``name`` of ``kind`` ('conv', 'linear', ...); ``order`` lists
        all layers in definition order. Keys of one ``exclusive`` group are alternatives:
        a more specific level that sets one of them drops the others set by less specific levels."""
        levels: list[Mapping[str, Any]] = []
        table = dict(self.rules)
        if "_default" in table:
            levels.append(table["_default"])
        if f"_{kind}" in table:
            levels.append(table[f"_{kind}"])
        if order and name == order[0] and "_first" in table:
            levels.append(table["_first"])
        if order and name == order[-1] and "_last" in table:
            levels.append(table["_last"])
        regex = self._regex_for(name)
        if regex is not None:
            levels.append(table[regex])
        if name in table:
            levels.append(table[name])
        out: dict[str, Any] = {}
        for level in levels:
            for group in exclusive:
                if group & set(level):
                    for key in group:
                        out.pop(key, None)
            out.update(level)
        return out

    def _regex_for(self, name: str) -> str | None:
        """The ``re:`` rule that applies to ``name``: the first in file order that matches it."""
        for pattern, _ in self.rules:
            if pattern.startswith("re:") and re.fullmatch(pattern[3:], name):
                return pattern
        return None

    def names(self, name: str) -> bool:
        """Whether a rule names layer ``name`` exactly (not through a pattern or special key): a
        stage refuses, rather than skips, a layer named this way that it cannot change."""
        return any(p == name for p, _ in self.rules)

    def unused(self, names: Sequence[str]) -> list[str]:
        """Exact-name and ``re:`` rules that apply to none of ``names``, in file order. A regex
        applies to the names it is the first regex to match; special keys are never unused."""
        applied = {self._regex_for(n) for n in names} | set(names)
        special = special_keys()
        return [p for p, _ in self.rules if p not in special and p not in applied]

    def to_dict(self) -> dict[str, Any]:
        """``pattern → settings`` as a recipe file writes them (enum values as their strings)."""
        return {k: {n: (v.value if isinstance(v, Enum) else v) for n, v in s.items()} for k, s in self.rules}
