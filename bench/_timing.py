"""Side-by-side latency measurement for benchmarks on a shared, noisy machine.

Every candidate runs in the same process, interleaved round by round (so a burst of load from
another process hits all of them alike), and each reports the median over rounds of its mean time
per call within a round."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def per_call_seconds(fn: Callable[[], object], min_seconds: float = 0.02, max_calls: int = 10_000) -> float:
    """Mean seconds per call of ``fn`` over at least ``min_seconds`` (and at least one call)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds or calls >= max_calls:
            return elapsed / calls


def side_by_side(candidates: Mapping[str, Callable[[], object]], rounds: int = 15, warmup: int = 3,
                 min_seconds: float = 0.02) -> dict[str, dict[str, float]]:
    """Median (and quartiles) over ``rounds`` of each candidate's seconds per call, the candidates
    interleaved within every round."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            samples[name].append(per_call_seconds(fn, min_seconds))
    out = {}
    for name, xs in samples.items():
        q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [xs[0]] * 3
        out[name] = {"median_s": statistics.median(xs), "q1_s": q[0], "q3_s": q[2], "rounds": len(xs)}
    return out
