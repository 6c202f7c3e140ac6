"""The stage reference of docs/recipes.md, generated from the stage registry.

Each stage class is the one definition of its kind: its order, its docstring, its per-layer
settings (:attr:`~deepshrink.recipes.stages.Stage.settings`) and its stage settings with their
defaults (the dataclass fields). :func:`stage_tables` writes them out; a test checks that the
document holds exactly this text, so a new stage or setting cannot go undocumented.
"""

from __future__ import annotations

import inspect
from dataclasses import MISSING, fields
from enum import Enum
from typing import Any

from deepshrink.recipes.stages import STAGES, Stage


def _types(t: Any) -> str:
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join({"int": "integer", "float": "number", "str": "string", "bool": "boolean"}.get(x.__name__, x.__name__)
                       for x in ts)


def _default(f: Any) -> str:
    if f.default is not MISSING:
        v = f.default
    elif f.default_factory is not MISSING:  # type: ignore[misc]
        v = f.default_factory()  # type: ignore[misc]
        if hasattr(v, "to_dict"):
            d = v.to_dict()
            if isinstance(d, dict) and "epochs" in d:  # a training run: its main settings
                return f"training: {d['epochs']} epochs, lr {d['lr']:g}, distill {d['distill']:g}"
            return "(no rules)" if not d else ", ".join(f"`{k}`" for k in d)
    else:
        return "(required)"
    if isinstance(v, Enum):
        v = v.value
    return f"`{str(v).lower() if isinstance(v, bool) else v}`"


def _summary(cls: type[Stage]) -> str:
    doc = inspect.cleandoc(cls.__doc__ or "")
    return " ".join(doc.split("\n\n")[0].split())


def stage_tables() -> str:
    """Markdown: one section per registered stage, in recipe order."""
    lines = ["| order | kind | changes the graph | stores its own form | what it does |", "|---|---|---|---|---|"]
    ordered = sorted(STAGES.values(), key=lambda c: c.order)
    for cls in ordered:
        lines.append(f"| {cls.order} | `{cls.kind}` | {'yes' if cls.changes_graph else 'no'} | "
                     f"{'yes' if cls.stores_form else 'no'} | {_summary(cls)} |")
    for cls in ordered:
        lines += ["", f"### `{cls.kind}`", "", _summary(cls), ""]
        if cls.settings:
            lines += ["Per-layer settings (in `[stages.layers]` rules): " + ", ".join(
                f"`{k}` ({_types(t)})" for k, t in cls.settings.items()) + ".", ""]
        lines += ["| stage setting | default |", "|---|---|"]
        lines += [f"| `{f.name}` | {_default(f)} |" for f in fields(cls)]  # type: ignore[arg-type]
    return "\n".join(lines) + "\n"
