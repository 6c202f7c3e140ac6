"""The recipe search behind the built-in deep-compression recipe (LeNet-300-100, Fashion-MNIST).

Each variant changes the prune schedule, retraining and distillation; decisions use the
validation accuracy only (the test accuracy is printed for information). Usage:

    python bench/recipe_search.py --weights base.safetensors H P2 ...

where base.safetensors comes from `deepshrink train --model lenet-300-100 -o base.safetensors`.
Variants A-G ran before float16 rounding and automatic gap widths existed, so their bytes are
larger than the same settings give now. Results of this session are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import deepshrink as ds
from deepshrink.recipes import Recipe

VARIANTS = {
 "A": dict(steps=5, re=dict(epochs=3, lr=5e-4), sp=0.92, last=0.75, ft=dict(epochs=3, lr=1e-4)),
 "B": dict(steps=6, re=dict(epochs=4, lr=3e-4), sp=0.93, last=0.75, ft=dict(epochs=4, lr=1e-4)),
 "D": dict(steps=4, re=dict(epochs=8, lr=1e-3), sp=0.92, last=0.75, ft=dict(epochs=3, lr=3e-4)),
 "E": dict(steps=8, re=dict(epochs=4, lr=1e-3), sp=0.92, last=0.75, ft=dict(epochs=3, lr=3e-4)),
 "F": dict(steps=4, re=dict(epochs=5, lr=2e-3), sp=0.92, last=0.75, ft=dict(epochs=3, lr=3e-4)),
 "G": dict(steps=4, re=dict(epochs=5, lr=1e-3, weight_decay=1e-4), sp=0.92, last=0.75, ft=dict(epochs=6, lr=3e-4)),
 "H": dict(steps=4, re=dict(epochs=8, lr=1e-3, distill=0.5), sp=0.92, last=0.75, ft=dict(epochs=3, lr=3e-4, distill=0.5)),
 "I": dict(steps=4, re=dict(epochs=8, lr=1e-3, distill=0.9), sp=0.92, last=0.75, ft=dict(epochs=3, lr=3e-4, distill=0.9)),
 "J": dict(steps=4, re=dict(epochs=8, lr=1e-3, distill=0.7), sp=0.94, last=0.75, ft=dict(epochs=3, lr=3e-4, distill=0.7)),
 "K": dict(steps=8, re=dict(epochs=4, lr=1e-3, distill=0.5), sp=0.92, last=0.75, ft=dict(epochs=3, lr=3e-4, distill=0.5)),
 "M": dict(steps=4, re=dict(epochs=8, lr=1e-3, distill=0.5), sp=0.85, first=0.94, last=0.75, ft=dict(epochs=3, lr=3e-4, distill=0.5)),
 "N": dict(steps=4, re=dict(epochs=12, lr=1e-3, distill=0.5), sp=0.92, last=0.75, ft=dict(epochs=3, lr=3e-4, distill=0.5)),
 "P1": dict(steps=4, re=dict(epochs=8, lr=1e-3, distill=0.5), sp=0.85, first=0.93, last=0.7, ft=dict(epochs=3, lr=3e-4, distill=0.5)),
 "P2": dict(steps=4, re=dict(epochs=8, lr=1e-3, distill=0.5, temperature=2.0), sp=0.92, last=0.75, ft=dict(epochs=3, lr=3e-4, distill=0.5, temperature=2.0)),
 "P3": dict(steps=6, re=dict(epochs=6, lr=1e-3, distill=0.5), sp=0.92, last=0.75, ft=dict(epochs=3, lr=3e-4, distill=0.5)),
 "C": dict(steps=4, re=dict(epochs=5, lr=1e-3, weight_decay=0.0), sp=0.92, last=0.75, ft=dict(epochs=3, lr=3e-4)),
}


def recipe(name: str) -> Recipe:
    v = VARIANTS[name]
    layers = {"_linear": {"sparsity": v["sp"]}, "_conv": {"sparsity": 0.8}, "_last": {"sparsity": v["last"]}}
    if "first" in v:
        layers["fc1"] = {"sparsity": v["first"]}
    return Recipe.from_dict({"name": name, "stages": [
        {"kind": "prune", "steps": v["steps"], "retrain": v["re"], "layers": layers},
        {"kind": "share", "finetune": v["ft"], "float16": True, "layers": {"_linear": {"bits": 5}, "_conv": {"bits": 8}}},
        {"kind": "code", "coder": "huffman", "layers": {"_default": {"gap_bits": "auto"}}},
    ]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--model", default="lenet-300-100")
    parser.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = ds.load_dataset("fashion-mnist")
    for name in args.variants:
        model = ds.build_model(args.model)
        ds.load_weights(model, args.weights)
        t = time.time()
        res = ds.compress(model, data, recipe(name), progress=False)
        print(name, json.dumps([(s.stage, round(100 * s.val_accuracy, 2), s.file_bytes) for s in res.stages]),
              f"test {100 * res.baseline.test_accuracy:.2f} -> {100 * res.file_accuracy:.2f}",
              f"{res.ratio:.1f}x", f"{time.time() - t:.0f}s", flush=True)


if __name__ == "__main__":
    main()
