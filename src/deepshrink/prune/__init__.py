"""Pruning: magnitude masks, iterative prune–retrain."""

from deepshrink.prune.magnitude import (
    apply_mask,
    current_weight,
    layer_kind,
    layer_kinds,
    magnitude_mask,
    make_permanent,
    masked_training,
    prunable_layers,
    Ramp,
    sparsity_of,
)

__all__ = [
    "apply_mask",
    "current_weight",
    "layer_kind",
    "layer_kinds",
    "magnitude_mask",
    "make_permanent",
    "masked_training",
    "prunable_layers",
    "Ramp",
    "sparsity_of",
]
