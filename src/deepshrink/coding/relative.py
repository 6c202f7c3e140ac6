"""Relative-index sparse layout of Deep Compression (Han et al. 2016, Fig. 2).

A flattened tensor of ``numel`` entries whose nonzero positions are sorted is stored as a
list of entries ``(gap, value)``: ``gap`` is the number of positions skipped since the
previous entry (or since the start), in ``[0, 2**gap_bits - 1]``. When a real gap is larger,
filler entries with ``gap = 2**gap_bits - 1`` and value zero are inserted; each advances
``2**gap_bits`` positions (its gap plus itself). The entry positions are then
``cumsum(gaps + 1) - 1``; fillers land on positions whose value is zero.
"""

from __future__ import annotations

import numpy as np

from deepshrink.coding._util import as_int, as_symbols
from deepshrink.errors import ConfigError, CorruptStream

__all__ = ["encode_positions", "decode_positions"]


def encode_positions(
    positions: np.ndarray, numel: int, gap_bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Gaps (int64) of every entry, fillers included, and the mask (bool) of filler entries.

    ``positions`` must be strictly increasing and inside ``[0, numel)``; ``gap_bits`` in
    1..16. The real entries are ``gaps[~is_filler]``, in the order of ``positions``.
    """
    n_el = as_int(numel, "numel")
    if n_el < 0:
        raise ConfigError(f"numel must be >= 0, got {n_el}")
    b = as_int(gap_bits, "gap_bits")
    if not 1 <= b <= 16:
        raise ConfigError(f"gap_bits must be in 1..16, got {b}")
    pos = as_symbols(positions, "positions")
    if pos.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    if int(pos[0]) < 0 or int(pos[-1]) >= n_el:
        raise ConfigError(f"positions must lie in [0, {n_el})")
    real_gap = np.diff(pos, prepend=-1) - 1
    if int(real_gap.min()) < 0:
        raise ConfigError("positions must be strictly increasing")
    period = 1 << b  # positions advanced by one filler
    fillers = real_gap // period
    slot = np.cumsum(fillers + 1) - 1  # index of every real entry in the output
    total = int(slot[-1]) + 1
    gaps = np.full(total, period - 1, dtype=np.int64)
    gaps[slot] = real_gap % period
    is_filler = np.ones(total, dtype=bool)
    is_filler[slot] = False
    return gaps, is_filler


def decode_positions(gaps: np.ndarray, numel: int) -> np.ndarray:
    """Positions (int64) of all entries, fillers included: ``cumsum(gaps + 1) - 1``.

    :class:`CorruptStream` if a gap is negative or a position falls outside ``[0, numel)``.
    """
    n_el = as_int(numel, "numel")
    if n_el < 0:
        raise ConfigError(f"numel must be >= 0, got {n_el}")
    g = as_symbols(gaps, "gaps")
    if g.size == 0:
        return np.zeros(0, dtype=np.int64)
    if int(g.min()) < 0:
        raise CorruptStream("relative-index gaps must be >= 0")
    # The last position is sum(gaps + 1) - 1; bound it in float64 before an int64 cumsum
    # could overflow.
    if float(g.sum(dtype=np.float64)) + g.size > n_el + 0.5:
        raise CorruptStream(
            f"relative-index entries run past the end of a tensor of {n_el} elements"
        )
    pos = np.cumsum(g + 1) - 1
    if int(pos[-1]) >= n_el:
        raise CorruptStream(
            f"relative-index entries reach position {int(pos[-1])}, beyond a tensor of "
            f"{n_el} elements"
        )
    return pos
