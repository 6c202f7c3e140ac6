"""Compression recipes (TOML files) and per-layer rules."""

from deepshrink.recipes.config import (
    CodeStage,
    LowRankStage,
    PruneStage,
    Recipe,
    ShareStage,
    builtin_recipes,
    load_recipe,
)
from deepshrink.recipes.rules import LayerRules

__all__ = ["CodeStage", "LayerRules", "LowRankStage", "PruneStage", "Recipe", "ShareStage", "builtin_recipes", "load_recipe"]
