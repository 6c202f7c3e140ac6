"""Pruning: magnitude masks, iterative prune–retrain."""

from deepshrink.prune.magnitude import (
    PRUNABLE,
    apply_mask,
    current_weight,
    layer_kind,
    magnitude_mask,
    make_permanent,
    masked_training,
    prunable_layers,
    sparsity_of,
)

__all__ = [
    "PRUNABLE",
    "apply_mask",
    "current_weight",
    "layer_kind",
    "magnitude_mask",
    "make_permanent",
    "masked_training",
    "prunable_layers",
    "sparsity_of",
]
