"""How many CPU threads torch uses, chosen once per process.

:func:`set_threads` is called by every CLI command (``--threads``); API users may call it
themselves. ``None`` takes ``$DEEPSHRINK_THREADS`` if set, else :data:`DEFAULT_THREADS`.

Why one thread by default: deepshrink's networks are small (LeNet-300-100 has 266,610
parameters, a forward pass of a batch of 128 is ~68 MFLOP), so a second intra-op thread has
little to share and costs a synchronisation per operator. On a shared machine it is far worse:
when the other core is busy, every operator waits for the slower thread. Measured on the
project's two-core machine (masked LeNet-300-100, one retraining epoch on Fashion-MNIST, wall-clock
median of 4): under load, 2.0 s with one thread and 24–35 s with two; idle, 1.13 s with one and
0.72–1.17 s with two. One thread loses at most ~1.6× when the machine is idle and wins >10× when
it is not. Larger models may gain from more threads: pass ``--threads N`` or set
``DEEPSHRINK_THREADS``.

What depends on the thread count: only the order in which floating-point reductions (matrix
products, sums, convolutions) add their partial results, so results agree to float rounding.
Seeds, data order, splits, masks and every integer computation (sizes, coding, file bytes of a
given model) do not depend on it. Rounding differences can change an argmax on a near tie or,
through training, grow into small differences in the trained weights (in the measurement above
the validation accuracy after one epoch was 84.12 % with one thread and 84.14 % with two).
"""

from __future__ import annotations

import os

import torch

from deepshrink.errors import ConfigError

__all__ = ["DEFAULT_THREADS", "THREADS_ENV", "max_threads", "set_threads"]

#: Threads used when neither the caller nor ``$DEEPSHRINK_THREADS`` says otherwise.
DEFAULT_THREADS = 1
THREADS_ENV = "DEEPSHRINK_THREADS"


def max_threads() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _check(n: object, source: str) -> int:
    limit = max_threads()
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limit:
        raise ConfigError(f"{source} must be an integer in 1..{limit} (the CPUs available to this process), got {n!r}")
    return n


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op (and, if still possible, inter-op) thread count; return it.

    ``n`` is an int in ``1..max_threads()``; ``None`` reads ``$DEEPSHRINK_THREADS``, else uses
    :data:`DEFAULT_THREADS`. Raises :class:`~deepshrink.errors.ConfigError` for anything else.
    torch accepts the inter-op count only before its first parallel work; later calls keep the
    inter-op pool as it is (it does not run deepshrink's operators).
    """
    if n is None:
        raw = os.environ.get(THREADS_ENV, "").strip()
        if raw:
            try:
                value: object = int(raw)
            except ValueError:
                value = raw
            n = _check(value, f"${THREADS_ENV}")
        else:
            n = DEFAULT_THREADS
    n = _check(n, "threads")
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # the inter-op pool has started: torch fixes its size from then on
        pass
    return n
