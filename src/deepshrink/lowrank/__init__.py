"""Low-rank factorisation (issue 3, in progress): truncated SVD of linear layers."""

from deepshrink.lowrank.svd import factorize_linear, resolve_rank, truncated_svd

__all__ = ["factorize_linear", "resolve_rank", "truncated_svd"]
