"""Safety limits for reading untrusted files."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Safety limits applied when reading a file from an untrusted source."""

    max_header_bytes: int = 1 << 20
    max_tensor_elements: int = 1 << 27
    max_total_elements: int = 1 << 28
    max_activation_elements: int = 1 << 26  # per node output, for a batch of 2 in the load-time check

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_tensor_elements", "max_total_elements", "max_activation_elements"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, got {v!r}")
