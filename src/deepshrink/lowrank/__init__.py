"""Low-rank factorisation: truncated SVD and Sparse Low Rank (SLR) for linear layers; spatial SVD,
Tucker-2 and CP for convolutions. Every scheme replaces a layer by a ``Sequential`` of smaller
real layers, so files, the runtime and ONNX export see ordinary layers."""

from deepshrink.lowrank.conv import (
    cp_conv,
    cp_degeneracy,
    cp_factors,
    cp_rank,
    spatial_factors,
    spatial_rank,
    spatial_svd_conv,
    tucker2_conv,
    tucker2_factors,
    tucker_ranks,
)
from deepshrink.lowrank.factorize import (
    CONV_METHODS,
    LINEAR_METHODS,
    METHODS,
    LowRankMethod,
    Method,
    as_method,
    check_method,
    factorize,
    low_rank_kind,
    no_low_rank_form,
    weight_counts,
)
from deepshrink.lowrank.slr import (
    Importance,
    NeuronScores,
    least_important,
    neuron_importance,
    slr_linear,
    slr_masks,
    slr_rank,
)
from deepshrink.lowrank.svd import factorize_linear, resolve_rank, truncated_svd

__all__ = [
    "CONV_METHODS", "Importance", "LINEAR_METHODS", "METHODS", "LowRankMethod", "Method", "NeuronScores",
    "as_method", "check_method", "low_rank_kind", "no_low_rank_form",
    "cp_conv", "cp_degeneracy", "cp_factors", "cp_rank", "factorize", "factorize_linear", "least_important",
    "neuron_importance", "resolve_rank", "slr_linear", "slr_masks", "slr_rank", "spatial_factors", "spatial_rank",
    "spatial_svd_conv", "truncated_svd", "tucker2_conv", "tucker2_factors", "tucker_ranks", "weight_counts",
]
