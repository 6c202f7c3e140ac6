"""Compression recipes (TOML files), the stage registry and per-layer rules."""

from deepshrink.recipes.config import RECIPE_VERSION, Recipe, builtin_recipes, dump_toml, load_recipe
from deepshrink.recipes.rules import LayerRules
from deepshrink.recipes.stages import (
    STAGES,
    CodeStage,
    Layer,
    LowRankStage,
    PruneStage,
    ShareStage,
    Stage,
    default_gap_bits,
    register_stage,
)

__all__ = [
    "RECIPE_VERSION", "STAGES", "CodeStage", "Layer", "LayerRules", "LowRankStage", "PruneStage", "Recipe",
    "ShareStage", "Stage", "builtin_recipes", "default_gap_bits", "dump_toml", "load_recipe", "register_stage",
]
