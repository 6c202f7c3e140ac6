"""Compression recipes (TOML files) and per-layer rules."""

from deepshrink.recipes.config import CodeStage, PruneStage, Recipe, ShareStage, builtin_recipes, load_recipe
from deepshrink.recipes.rules import LayerRules

__all__ = ["CodeStage", "LayerRules", "PruneStage", "Recipe", "ShareStage", "builtin_recipes", "load_recipe"]
