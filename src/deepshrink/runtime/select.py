"""Choosing each layer's kernel by measuring once, at load.

For every layer, each candidate kernel (:data:`~deepshrink.runtime.kernels.KERNELS`: available
on this machine, able to run the layer, and keeping at most :data:`MAX_MEMORY_FACTOR` times the
dense weight's bytes) is built and timed on a synthetic input of the layer's real per-sample
shape, at batch 1 and at a large batch (:data:`LARGE_BATCH`, or the most the file's activation
limit allows). Candidates are timed in turns (round robin), so a burst of noise on the machine
hits them alike, and the median of the turns is kept. A candidate whose output on the synthetic
input differs from the dense kernel's by more than float rounding is dropped with a warning.

The winner at batch 1 runs batches of fewer than :data:`SMALL_BATCH` samples, the winner at the
large batch the rest. Measuring is bounded: a candidate whose warm-up call is
:data:`LOSER_FACTOR` times slower than the fastest one's is not timed further, each layer and
batch gets about :data:`LAYER_BUDGET_S` seconds of timed calls (at least :data:`MIN_TURNS`
turns), and once the whole load has measured for :data:`TOTAL_BUDGET_S` seconds, the
remaining layers take the ``dense`` kernel unmeasured (``"measured": False`` in the report).
When the two batch sizes have different winners but one of them is within :data:`ONE_KERNEL_MARGIN`
of the other at the other batch size, it runs both (one copy of the weight instead of two).
Nothing global is changed: timings are taken with the caller's PyTorch thread count.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from deepshrink.errors import ConfigError
from deepshrink.runtime.kernels import KERNELS, Kernel, Layer

SMALL_BATCH = 8
"""Batches of fewer samples run the kernel that won at batch 1; larger ones the large-batch winner."""
LARGE_BATCH = 64
"""The batch of the large-batch measurement (capped by the file's activation limit)."""
MAX_MEMORY_FACTOR = 2.0
"""A candidate that would keep more than this many times the dense weight's bytes is not tried."""
LAYER_BUDGET_S = 0.03
"""Seconds of timed calls per layer and batch, spread over the candidates."""
MIN_TURNS, MAX_TURNS = 3, 25
"""Bounds on the timed calls per candidate (after two warm-up calls)."""
ONE_KERNEL_MARGIN = 1.1
"""A kernel within this factor of the other batch size's winner runs both batch sizes."""
LOSER_FACTOR = 4.0
"""A candidate whose warm-up call takes this many times the fastest one's is not timed further."""
TOTAL_BUDGET_S = 3.0
"""Past this much measuring in one load, the remaining layers run ``dense`` unmeasured."""
TOLERANCE = 1e-4
"""Largest |candidate - dense| on the synthetic input, relative to the dense output's scale."""

PREFER = ("speed", "memory")
"""What the selector optimises: the fastest kernel per batch regime, or the fewest resident bytes
(among the kernels whose output matches the dense kernel's), one kernel for every batch."""

KernelRequest = str | Mapping[str, str] | None
"""``kernels=`` of :func:`deepshrink.load`: None (measure), one kernel name for every layer that
it can run, or layer name → kernel name."""


@dataclass
class Choice:
    """The kernels of one layer: ``small`` runs batches under :data:`SMALL_BATCH`, ``large`` the
    rest (the same object when one kernel won both); ``timings_us`` holds the median microseconds
    per call of every candidate by batch size; ``rejected`` the candidates not tried and why."""

    layer: Layer
    small: Kernel
    large: Kernel
    timings_us: dict[str, dict[str, float]] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    forced: bool = False
    measured: bool = True

    @property
    def resident_bytes(self) -> int:
        if self.small is self.large:
            return self.small.resident_bytes
        return self.small.resident_bytes + self.large.resident_bytes

    def report(self, name: str, large_batch: int) -> dict[str, Any]:
        """The choice as plain data, for node ``name`` (``shared_with`` the node it was chosen
        for, when another)."""
        layer = self.layer
        return {
            "layer": name, "shared_with": None if name == layer.name else layer.name, "op": layer.op, "weight": layer.param, "encoding": layer.encoding,
            "shape": list(layer.shape), "nnz": layer.nnz,
            "kernel_batch1": self.small.name, "kernel_batchN": self.large.name,
            "small_batch_below": SMALL_BATCH, "large_batch_measured": large_batch,
            "timings_us": self.timings_us, "weight_bytes_resident": self.resident_bytes,
            "weight_bytes_dense": layer.dense_bytes, "forced": self.forced, "measured": self.measured,
            "rejected": self.rejected,
        }


def resolve_request(request: KernelRequest, layers: list[Layer]) -> dict[str, str]:
    """Layer name → forced kernel name, checked: unknown kernels and layers, and kernels that
    cannot run a layer named explicitly, raise :class:`ConfigError`. One name for every layer
    applies to the layers it can run (an error if none)."""
    if request is None:
        return {}
    names = [layer.name for layer in layers]
    if isinstance(request, str):
        cls = _kernel_class(request)
        why = cls.available()
        if why is not None:
            raise ConfigError(f"kernel {request!r} cannot run here: {why}")
        out = {layer.name: request for layer in layers if cls.unsupported(layer) is None}
        if layers and not out:
            raise ConfigError(f"kernel {request!r} runs none of the layers {names}")
        return out
    if not isinstance(request, Mapping):
        raise ConfigError(f"kernels must be a kernel name or a mapping of layer name to kernel name, got "
                          f"{type(request).__name__}")
    by_name = {layer.name: layer for layer in layers}
    out = {}
    for lname, kname in request.items():
        if lname not in by_name:
            raise ConfigError(f"kernels names layer {lname!r}, which is not a linear or conv layer of this network; "
                              f"its layers are {names}")
        if not isinstance(kname, str):
            raise ConfigError(f"kernels[{lname!r}] must be a kernel name, got {kname!r}")
        cls = _kernel_class(kname)
        why = cls.available() or cls.unsupported(by_name[lname])
        if why is not None:
            raise ConfigError(f"kernel {kname!r} cannot run layer {lname!r}: {why}")
        out[lname] = kname
    return out


def _kernel_class(name: str) -> type[Kernel]:
    if name not in KERNELS:
        raise ConfigError(f"unknown kernel {name!r}; the kernels are {list(KERNELS)}")
    return KERNELS[name]


class Selector:
    """Chooses the kernels of a network's layers, sharing one measuring budget."""

    def __init__(self, large_batch: int = LARGE_BATCH, total_budget_s: float | None = None, prefer: str = "speed"):
        if prefer not in PREFER:
            raise ConfigError(f"prefer must be one of {list(PREFER)}, got {prefer!r}")
        self.prefer = prefer
        self.large_batch = max(1, large_batch)
        self.budget_left = TOTAL_BUDGET_S if total_budget_s is None else total_budget_s
        self.seconds = 0.0
        self._gen = torch.Generator().manual_seed(0)

    def choose(self, layer: Layer, forced: str | None = None) -> Choice:
        start = time.perf_counter()
        try:
            return self._choose(layer, forced)
        finally:
            spent = time.perf_counter() - start
            self.seconds += spent
            self.budget_left -= spent

    def _choose(self, layer: Layer, forced: str | None) -> Choice:
        if forced is not None:
            kernel = KERNELS[forced](layer)
            return Choice(layer, kernel, kernel, forced=True, measured=False)
        rejected: dict[str, str] = {}
        candidates: dict[str, Kernel] = {}
        limit = MAX_MEMORY_FACTOR * layer.dense_bytes
        for name, cls in KERNELS.items():
            why = cls.available() or cls.unsupported(layer)
            if why is None and name != "dense" and cls.estimate_bytes(layer) > limit:
                why = (f"would keep {cls.estimate_bytes(layer):,} bytes, over {MAX_MEMORY_FACTOR:g}x the dense "
                       f"weight's {layer.dense_bytes:,}")
            if why is not None:
                rejected[name] = why
                continue
            if self.budget_left <= 0 and name != "dense":
                rejected[name] = "not measured: the load's measuring budget is spent"
                continue
            try:
                candidates[name] = cls(layer)
            except (RuntimeError, ValueError, MemoryError, OSError) as exc:  # a kernel that cannot build is skipped
                rejected[name] = f"could not be built: {exc}"
        if len(candidates) == 1:
            kernel = next(iter(candidates.values()))
            return Choice(layer, kernel, kernel, rejected=rejected, measured=False)
        timings: dict[str, dict[str, float]] = {}
        measured = []
        for batch in dict.fromkeys((1, self.large_batch)):
            x = torch.randn((batch, *layer.in_shape), generator=self._gen)
            measured.append(self._measure(candidates, x, rejected))
            for name, us in measured[-1].items():
                timings.setdefault(name, {})[f"batch{batch}"] = round(us, 2)
        if self.prefer == "memory":  # the fewest resident bytes among the correct kernels, one for both regimes
            name = min((n for n in candidates), key=lambda n: (candidates[n].resident_bytes, measured[0].get(n, 0.0)))
            return Choice(layer, candidates[name], candidates[name], timings, rejected)
        # a candidate dropped at the large batch is out of both regimes
        small, large = (min((n for n in times if n in candidates), key=times.__getitem__)
                        for times in (measured[0], measured[-1]))
        if small != large:  # one kernel (one copy of the weight) when it is nearly as fast at both
            if measured[0][large] <= ONE_KERNEL_MARGIN * measured[0][small]:
                small = large
            elif measured[-1][small] <= ONE_KERNEL_MARGIN * measured[-1][large]:
                large = small
        return Choice(layer, candidates[small], candidates[large], timings, rejected)

    def _measure(self, candidates: dict[str, Kernel], x: torch.Tensor, rejected: dict[str, str]) -> dict[str, float]:
        """Median microseconds per call of each candidate on ``x``; candidates whose output is
        wrong are moved to ``rejected`` (``dense``, the reference, is never)."""
        fns = {}
        first = {}
        with torch.no_grad():
            ref = candidates["dense"].fn(x) if "dense" in candidates else None
            scale = float(ref.abs().max()) if ref is not None and ref.numel() else 0.0
            for name, kernel in list(candidates.items()):
                y = kernel.fn(x)  # the first call of a kind of op can be slow once per process
                t0 = time.perf_counter()
                kernel.fn(x)
                first[name] = time.perf_counter() - t0
                if ref is not None and name != "dense":
                    bad = tuple(y.shape) != tuple(ref.shape) or float((y - ref).abs().max()) > TOLERANCE * max(scale, 1.0)
                    if bad:
                        warnings.warn(f"layer {kernel.layer}: the {name} kernel's output differs from the dense "
                                      f"kernel's; not using it", RuntimeWarning, stacklevel=4)
                        rejected[name] = "its output differed from the dense kernel's"
                        del candidates[name]
                        continue
                fns[name] = kernel.fn
            # a candidate whose warm-up call took LOSER_FACTOR times the fastest one's is not timed
            # further: that call stands as its timing
            fastest = min(first[n] for n in fns)
            slow = {n: [first[n]] for n in fns if first[n] > LOSER_FACTOR * fastest}
            fns = {n: f for n, f in fns.items() if n not in slow}
            turns = int(LAYER_BUDGET_S / max(sum(first[n] for n in fns), 1e-9))
            turns = max(MIN_TURNS, min(MAX_TURNS, turns))
            samples: dict[str, list[float]] = {name: [] for name in fns}
            order = list(fns.items())
            for t in range(turns):
                k = t % len(order)
                for name, fn in order[k:] + order[:k]:
                    t0 = time.perf_counter()
                    fn(x)
                    samples[name].append(time.perf_counter() - t0)
        return {name: statistics.median(s) * 1e6 for name, s in {**samples, **slow}.items()}
