"""Deterministic tensors for the coding benchmarks (decode and encode speed of coded weights).

* :func:`mlp_tensors`: the weights of a 37 M-parameter MLP 784→4096→4096→4096→10 (36.8 M
  weights), each pruned to 8% density by magnitude (random normal weights) and shared with a
  5-bit k-means codebook, as ``prune → share`` leaves them.
* :func:`layer_16m`: one such 4096×4096 layer (16.8 M weights).
* :func:`encode_all` codes tensors with the pipeline's default code stage for linear layers
  (``TensorCoding(coder=..., gap_bits=5)``, layout ``auto``); :func:`decode_all` decodes them
  with :func:`deepshrink.storage.decode_tensor` (gap decoding, scatter and codebook lookup
  included) and returns the number of dense weights reconstructed.

Measure on one core (``torch.set_num_threads(1)``; the coders are single-threaded anyway)::

    python bench/_codec_cases.py [--json]                     # this tree
    DEEPSHRINK_NO_EXTENSION=1 python bench/_codec_cases.py    # numpy fallback decoders
    PYTHONPATH=old/src python bench/_codec_cases.py           # an older tree (git archive)

Timings are the best of several runs, in wall-clock and in CPU time (the latter is less disturbed
by other processes on a shared machine).
"""

from __future__ import annotations

import time

import numpy as np

from deepshrink.coding import Coder
from deepshrink.share.kmeans import kmeans_1d
from deepshrink.storage import EncodedTensor, TensorCoding, decode_tensor, encode_tensor
from deepshrink.util.limits import Limits

MLP_SIZES = (784, 4096, 4096, 4096, 10)
DENSITY = 0.08
SHARE_BITS = 5
#: Lloyd iterations of the k-means (fewer than the library default: the codebook's quality does
#: not matter for coding speed, only its size and the symbol statistics).
KMEANS_ITERS = 20


def pruned_shared(shape: tuple[int, ...], seed: int, density: float = DENSITY, bits: int = SHARE_BITS) -> np.ndarray:
    """Random normal weights of ``shape``, pruned by magnitude to ``density`` and shared with
    ``2**bits`` k-means centroids (linear initialisation)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape, dtype=np.float32).reshape(-1)
    keep = max(1, round(density * w.size))
    idx = np.argpartition(np.abs(w), w.size - keep)[w.size - keep:]
    centroids, labels = kmeans_1d(w[idx], 1 << bits, iters=KMEANS_ITERS)
    out = np.zeros(w.size, np.float32)
    out[idx] = centroids[labels]
    return out.reshape(shape)


def mlp_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """The weight matrices of the 784→4096→4096→4096→10 MLP (``fc{i}.weight``, out × in)."""
    return {
        f"fc{i}.weight": pruned_shared((n_out, n_in), seed + i)
        for i, (n_in, n_out) in enumerate(zip(MLP_SIZES[:-1], MLP_SIZES[1:]), start=1)
    }


def layer_16m(seed: int = 0) -> np.ndarray:
    """One 4096×4096 layer at 8% density, 5-bit shared (the encoding benchmark's tensor)."""
    return pruned_shared((4096, 4096), seed)


def coding(coder: Coder | str = Coder.HUFFMAN, gap_bits: int | None = 5) -> TensorCoding:
    """The pipeline's coding of a linear layer's weight (default code stage: gap_bits 5)."""
    return TensorCoding(coder=Coder(coder), gap_bits=gap_bits)


def encode_all(tensors: dict[str, np.ndarray], coding_: TensorCoding) -> dict[str, EncodedTensor]:
    return {name: encode_tensor(name, a, coding_) for name, a in tensors.items()}


def decode_all(encoded: dict[str, EncodedTensor], limits: Limits | None = None) -> int:
    """Decode every tensor; returns the number of dense weights reconstructed."""
    limits = limits or Limits()
    total = 0
    for name, enc in encoded.items():
        sections = {k: memoryview(v) for k, v in enc.sections.items()}
        total += decode_tensor(name, enc.descriptor, sections, limits).size
    return total


def best_of(fn, repeats: int = 5, clock=time.perf_counter) -> float:
    """Smallest time of ``repeats`` calls of ``fn`` (seconds) on ``clock`` (wall clock by
    default; ``time.process_time`` for CPU time, which a busy machine disturbs less)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def measure(repeats: int = 5) -> dict:
    """Decode rate of the MLP and encode time of the 16.8 M layer, per coder, on one thread.

    Uses only APIs that exist before and after the fast coders, so the same function measures
    an older tree too (``PYTHONPATH=old/src python bench/_codec_cases.py --json``).
    """
    import torch

    torch.set_num_threads(1)
    tensors = mlp_tensors()
    n = sum(a.size for a in tensors.values())
    from deepshrink.coding import _util

    out: dict = {"mlp_weights": n, "compiled_decoders": getattr(_util, "FAST", None) is not None,
                 "decode": {}, "encode_16m_s": {}, "encode_16m_cpu_s": {}}
    for coder in (Coder.HUFFMAN, Coder.ANS):
        enc = encode_all(tensors, coding(coder))
        s = best_of(lambda: decode_all(enc), repeats)
        cpu = best_of(lambda: decode_all(enc), repeats, time.process_time)
        out["decode"][coder.value] = {
            "weights_per_s": n / s, "seconds": s, "cpu_weights_per_s": n / cpu,
            "bytes": sum(e.nbytes for e in enc.values()),
            "layouts": sorted({e.descriptor.get("layout", "raw") for e in enc.values()}),
        }
    layer = layer_16m()
    for coder in (Coder.HUFFMAN, Coder.ANS):
        for gap in (5, None):
            label = f"{coder.value}, gap_bits={gap or 'auto'}"
            out["encode_16m_s"][label] = best_of(lambda: encode_tensor("w", layer, coding(coder, gap)), repeats // 2 + 1)
            out["encode_16m_cpu_s"][label] = best_of(
                lambda: encode_tensor("w", layer, coding(coder, gap)), repeats // 2 + 1, time.process_time)
    return out


def main() -> None:
    import json
    import sys

    res = measure()
    if "--json" in sys.argv:
        print(json.dumps(res))
        return
    print(f"MLP {MLP_SIZES}: {res['mlp_weights'] / 1e6:.1f} M weights at {DENSITY:.0%} density, "
          f"{SHARE_BITS}-bit shared, one thread, compiled decoders: {res['compiled_decoders']}")
    for coder, r in res["decode"].items():
        print(f"  decode {coder:8s} {r['weights_per_s'] / 1e6:7.1f} M weights/s "
              f"({r['seconds'] * 1e3:.0f} ms; {r['cpu_weights_per_s'] / 1e6:.1f} M/s of CPU time; "
              f"{r['bytes']} bytes, layouts {r['layouts']})")
    for label, s in res["encode_16m_s"].items():
        print(f"  encode 4096x4096 {label:24s} {s:.2f} s ({res['encode_16m_cpu_s'][label]:.2f} s of CPU time)")


if __name__ == "__main__":
    main()
