"""Weight sharing: k-means codebooks with fine-tuned centroids (Han et al. 2016), and soft
weight-sharing under a learned mixture prior (Ullrich et al. 2017)."""

from deepshrink.share.kmeans import (
    KMeansInit,
    SharedWeight,
    centroids_of,
    finalize,
    is_shared,
    kmeans_1d,
    round_to_half,
    share_module,
)
from deepshrink.share.soft import (
    Mixture,
    PRIOR_STARTS,
    MixturePrior,
    ShareMethod,
    assign,
    merge_components,
    prior_penalty,
    snap,
)

__all__ = ["PRIOR_STARTS", "KMeansInit", "Mixture", "MixturePrior", "ShareMethod", "SharedWeight", "assign", "centroids_of", "finalize", "is_shared",
           "kmeans_1d", "merge_components", "prior_penalty", "round_to_half", "share_module", "snap"]
