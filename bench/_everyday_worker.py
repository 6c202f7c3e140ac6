"""One measurement of bench/everyday.py, run in a fresh process against one source tree.

``python bench/_everyday_worker.py TASK [ARGS...]`` prints one JSON object. The tree measured is
whichever ``deepshrink`` the interpreter imports (the driver sets ``PYTHONPATH`` to the tree's
``src``). Only API that exists in both the baseline and the current tree is used here.
"""

from __future__ import annotations

import json
import statistics
import sys
import time


def _cpu() -> float:
    return time.process_time()


def task_import_torch() -> dict:
    t0 = _cpu()
    import torch  # noqa: F401

    return {"import_cpu_s": _cpu() - t0}


def task_import_load(path: str) -> dict:
    t0 = _cpu()
    import deepshrink

    t1 = _cpu()
    deepshrink.load(path)
    t2 = _cpu()
    return {"import_cpu_s": t1 - t0, "load_cpu_s": t2 - t1, "file": deepshrink.__file__}


def task_decode(path: str, repeats: str) -> dict:
    import torch

    torch.set_num_threads(1)
    from deepshrink.fileformat.model_file import decode_tensors, read_model_file
    from deepshrink.util.limits import Limits

    limits = Limits()
    mf = read_model_file(path, limits)
    times = []
    numel = 0
    for _ in range(int(repeats)):
        t0 = time.perf_counter()
        tensors = decode_tensors(mf.container, mf.graph, limits)
        times.append(time.perf_counter() - t0)
        numel = sum(int(v.numel()) for v in tensors.values())
    med = statistics.median(times)
    return {"seconds": med, "weights": numel, "weights_per_s": numel / med}


def task_encode(npy: str, coder: str, repeats: str) -> dict:
    import numpy as np

    from deepshrink.storage.tensor_codec import TensorCoding, encode_tensor

    array = np.load(npy, allow_pickle=False)
    times = []
    nbytes = 0
    for _ in range(int(repeats)):
        t0 = time.perf_counter()
        enc = encode_tensor("fc.weight", array, TensorCoding(coder=coder, gap_bits=None))
        times.append(time.perf_counter() - t0)
        nbytes = enc.nbytes
    return {"seconds": statistics.median(times), "bytes": nbytes, "layout": enc.descriptor.get("layout")}


def _pruned_lenet(density: float = 0.08):
    import deepshrink as ds
    import torch
    from deepshrink.prune import apply_mask, magnitude_mask, prunable_layers

    torch.manual_seed(0)
    model = ds.build_model("lenet-300-100")
    for m in prunable_layers(model).values():
        apply_mask(m, magnitude_mask(m.weight, sparsity=1 - density))
    return model


def task_epoch(threads: str, epochs: str) -> dict:
    import deepshrink as ds
    import torch

    torch.set_num_threads(int(threads))
    data = ds.load_dataset("fashion-mnist", val_size=5000, seed=0)
    model = _pruned_lenet()
    per_epoch = []
    for e in range(int(epochs)):
        cfg = ds.TrainConfig(epochs=1, lr=1e-3, batch_size=128, seed=e)
        hist = ds.fit(model, data.tensors("train"), data.tensors("val"), cfg, progress=False)
        per_epoch.append(hist.seconds)
    return {"seconds_per_epoch": statistics.median(per_epoch), "epochs": len(per_epoch)}


def task_infer(threads: str, batch: str, repeats: str) -> dict:
    import deepshrink as ds
    import torch

    torch.set_num_threads(int(threads))
    model = ds.build_model("lenet-300-100").eval()
    x = torch.randn(int(batch), 1, 28, 28)
    times = []
    with torch.no_grad():
        for _ in range(10):
            model(x)
        for _ in range(int(repeats)):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times)}


if __name__ == "__main__":
    task, *args = sys.argv[1:]
    print(json.dumps(globals()[f"task_{task}"](*args)))
