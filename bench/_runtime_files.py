"""The compressed files bench/runtime.py runs: LeNet-300-100 and LeNet-5 on Fashion-MNIST, each
trained once (seed 0) and compressed with its Deep Compression recipe and with the low-rank chain.

Files are cached in ``runs/bench-runtime/`` (a dense baseline ``<model>.safetensors`` and one
``<model>--<recipe>.dsz`` per recipe); delete the directory to rebuild them.

    python bench/_runtime_files.py        # build whatever is missing
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _report import ROOT  # noqa: E402

DIR = ROOT / "runs" / "bench-runtime"
EPOCHS = {"lenet-300-100": 20, "lenet-5": 10}
RECIPES = {"lenet-300-100": ["deep-compression", "lowrank-chain"], "lenet-5": ["deep-compression-lenet5", "lowrank-chain"]}


def baseline_path(model: str) -> Path:
    return DIR / f"{model}.safetensors"


def file_path(model: str, recipe: str) -> Path:
    return DIR / f"{model}--{recipe}.dsz"


def ensure_files(threads: int = 2) -> list[tuple[str, str, Path]]:
    """Train and compress whatever is missing; returns ``(model, recipe, path)`` for every file."""
    import torch

    import deepshrink as ds

    torch.set_num_threads(threads)
    DIR.mkdir(parents=True, exist_ok=True)
    data = None
    out = []
    for model_name, recipes in RECIPES.items():
        for recipe in recipes:
            path = file_path(model_name, recipe)
            out.append((model_name, recipe, path))
            if path.exists():
                continue
            data = data or ds.load_dataset("fashion-mnist")
            model = ds.build_model(model_name, num_classes=data.num_classes)
            base = baseline_path(model_name)
            if base.exists():
                ds.load_weights(model, base)
            else:
                torch.manual_seed(0)
                ds.fit(model, data.tensors("train"), data.tensors("val"), ds.TrainConfig(epochs=EPOCHS[model_name], seed=0),
                       desc=f"train {model_name}")
                ds.save_weights(model, base)
            result = ds.compress(model, data, ds.load_recipe(recipe), meta={"model": model_name})
            from deepshrink.util.atomic import write_bytes_atomic

            write_bytes_atomic(path, result.data)
            print(f"{path.name}: {len(result.data):,} bytes", flush=True)
    return out


if __name__ == "__main__":
    ensure_files()
