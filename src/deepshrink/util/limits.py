"""Safety limits for reading untrusted files."""

from __future__ import annotations

from dataclasses import dataclass, fields

from deepshrink.errors import ConfigError


@dataclass(frozen=True)
class Limits:
    """Safety limits applied when reading a file from an untrusted source.

    * ``max_header_bytes``: stored and inflated header size.
    * ``max_tensor_elements`` / ``max_total_elements``: per tensor, and for the whole network
      counting a tensor once per node that uses it.
    * ``max_elements_per_file_byte``: decoded values per byte of the file (a compression-ratio
      bound against files that declare huge tensors of one cheaply coded symbol). Real files need
      far less: a 37 M-weight layer pruned to 1% and 5-bit shared stores 47 (Huffman) to 61 (ANS)
      weights per byte, and the strongest published LeNet-5 result (Bayesian Compression, 419×)
      about 105.
    * ``max_activation_elements``: activation values alive at once. A file whose network needs
      more for one sample is refused; :class:`~deepshrink.runtime.CompressedModel` splits larger
      batches into chunks that fit.
    * ``max_ops_per_sample``: operations per sample: multiply-accumulates (and pooling window
      reads), and at least one per output value of every node, so long chains of cheap
      elementwise ops count too.
    """

    max_header_bytes: int = 1 << 20
    max_tensor_elements: int = 1 << 27
    max_total_elements: int = 1 << 28
    max_elements_per_file_byte: int = 1 << 8
    max_activation_elements: int = 1 << 26
    max_ops_per_sample: int = 1 << 35

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"Limits.{f.name} must be a positive integer, got {v!r}")
