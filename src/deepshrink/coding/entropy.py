"""Empirical order-0 entropy of symbol streams."""

from __future__ import annotations

import numpy as np

from deepshrink.coding._util import check_alphabet, check_symbols

__all__ = ["histogram", "entropy_bits"]


def histogram(symbols: np.ndarray, alphabet_size: int) -> np.ndarray:
    """Counts (int64, length ``alphabet_size``) of every symbol; ConfigError if out of range."""
    a = check_alphabet(alphabet_size)
    syms = check_symbols(symbols, a)
    return np.bincount(syms, minlength=a).astype(np.int64)


def entropy_bits(symbols: np.ndarray, alphabet_size: int) -> float:
    """Total empirical order-0 entropy ``n * H`` in bits (0.0 for an empty stream)."""
    counts = histogram(symbols, alphabet_size)
    c = counts[counts > 0].astype(np.float64)
    n = float(c.sum())
    if n == 0.0:
        return 0.0
    return float(max(0.0, n * np.log2(n) - float(np.sum(c * np.log2(c)))))
