"""Hypothesis strategies shared by the coding tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


@st.composite
def symbol_streams(draw, max_alphabet: int = 300, max_len: int = 2000):
    """(symbols int64, alphabet_size): empty, constant, uniform or heavily skewed streams."""
    a = draw(st.integers(1, max_alphabet))
    n = draw(st.one_of(st.just(0), st.integers(1, 8), st.integers(0, max_len)))
    kind = draw(st.sampled_from(["uniform", "geometric", "dirichlet", "constant", "zeros", "two"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        syms = rng.integers(0, a, size=n)
    elif kind == "geometric":
        r = draw(st.floats(0.05, 0.95))
        p = r ** np.arange(a, dtype=np.float64)
        syms = rng.choice(a, size=n, p=p / p.sum())
    elif kind == "dirichlet":
        p = rng.dirichlet(np.full(a, draw(st.floats(0.05, 2.0))))
        p = np.maximum(p, 0)
        syms = rng.choice(a, size=n, p=p / p.sum())
    elif kind == "constant":
        syms = np.full(n, draw(st.integers(0, a - 1)))
    elif kind == "zeros":
        syms = np.zeros(n)
    else:
        pair = rng.integers(0, a, size=2)
        syms = pair[(rng.random(n) < 0.999).astype(int)]
    return syms.astype(np.int64), a


def skewed(n: int, alphabet: int, ratio: float, seed: int = 0) -> np.ndarray:
    """``n`` geometric-ish symbols: P(s) ~ ratio**s."""
    rng = np.random.default_rng(seed)
    p = ratio ** np.arange(alphabet, dtype=np.float64)
    return rng.choice(alphabet, size=n, p=p / p.sum()).astype(np.int64)


def fibonacci_counts(k: int) -> np.ndarray:
    """Counts 1, 1, 2, 3, 5, ...: the worst case for Huffman code length (depth k - 1)."""
    f = [1, 1]
    while len(f) < k:
        f.append(f[-1] + f[-2])
    return np.array(f[:k], dtype=np.int64)
