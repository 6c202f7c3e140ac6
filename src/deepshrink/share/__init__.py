"""Weight sharing: k-means codebooks with fine-tuned centroids."""

from deepshrink.share.kmeans import (
    INITS,
    SharedWeight,
    centroids_of,
    finalize,
    is_shared,
    kmeans_1d,
    round_to_half,
    share_module,
)

__all__ = ["INITS", "SharedWeight", "centroids_of", "finalize", "is_shared", "kmeans_1d", "round_to_half", "share_module"]
