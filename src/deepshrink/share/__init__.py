"""Weight sharing: k-means codebooks with fine-tuned centroids."""

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

__all__ = ["KMeansInit", "SharedWeight", "centroids_of", "finalize", "is_shared", "kmeans_1d", "round_to_half", "share_module"]
