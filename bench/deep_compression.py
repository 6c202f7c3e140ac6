"""Reproduce the Deep Compression table (Han et al. 2016) on Fashion-MNIST.

For LeNet-300-100 and LeNet-5: train a dense baseline, run the built-in ``deep-compression``
recipe (prune → share → Huffman), and code the same final model again with ANS and with fixed-
length codes. Reports accuracy and real file bytes after every stage, wall time, and per-stream
coded size next to the empirical entropy. Writes docs/benchmarks.md and bench/results/*.json.

    python bench/deep_compression.py [--models lenet-300-100 lenet-5] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import deepshrink as ds
from deepshrink.coding import Coder
from deepshrink.pipeline.compress import coding_rule
from deepshrink.prune import layer_kind, prunable_layers
from deepshrink.recipes import CodeStage, LayerRules

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, environment, update_section  # noqa: E402

EPOCHS = {"lenet-300-100": 20, "lenet-5": 10}
RECIPE = {"lenet-300-100": "deep-compression", "lenet-5": "deep-compression-lenet5"}
TARGET = {"lenet-300-100": 40.0, "lenet-5": 39.0}
PAPER = {"lenet-300-100": "1.64% → 1.58% error, 40× (MNIST)", "lenet-5": "0.80% → 0.74% error, 39× (MNIST)"}


def run(name: str, data: ds.Dataset, recipe: ds.Recipe, seed: int) -> dict:
    torch.manual_seed(seed)
    model = ds.build_model(name, num_classes=data.num_classes)
    t0 = time.perf_counter()
    hist = ds.fit(model, data.tensors("train"), data.tensors("val"),
                  ds.TrainConfig(epochs=EPOCHS[name], seed=seed), desc=f"train {name}")
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = ds.compress(model, data, recipe, meta={"model": name})
    compress_s = time.perf_counter() - t0
    layers = prunable_layers(result.model)
    order = list(layers)
    kinds = {n: layer_kind(m) for n, m in layers.items()}
    test = data.tensors("test")
    coders = {}
    paper_gaps = CodeStage(LayerRules((("_conv", {"gap_bits": 8}), ("_linear", {"gap_bits": 5}))))
    variants = [("huffman", recipe.code_stage, Coder.HUFFMAN), ("ans", recipe.code_stage, Coder.ANS),
                ("fixed", recipe.code_stage, Coder.FIXED), ("huffman, paper gap bits 5 fc / 8 conv", paper_gaps, Coder.HUFFMAN)]
    for label, code, coder in variants:
        t0 = time.perf_counter()
        blob, rep = ds.pack_model(result.model, data.input_spec, coding=coding_rule(code, coder, order, kinds))
        enc_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded = ds.load(blob)
        dec_s = time.perf_counter() - t0
        coders[label] = {
            "file_bytes": len(blob), "ratio": result.dense_bytes / len(blob),
            "test_accuracy": ds.evaluate(loaded, test), "encode_s": enc_s, "load_s": dec_s,
            "streams": [{"tensor": t.name, "stream": k, "symbols": s.symbols, "alphabet": s.alphabet,
                         "coded_bytes": s.coded_bytes, "entropy_bytes": s.entropy_bytes}
                        for t in rep.tensors for k, s in t.streams.items()],
        }
    out = result.to_dict()
    out.update(model=name, recipe=recipe.name, train_seconds=train_s, compress_seconds=compress_s,
               baseline_best_epoch=hist.best_epoch + 1, coders=coders)
    return out


def markdown(results: list[dict], command: str, recipe: str = "deep-compression") -> str:
    lines = ["## Deep Compression on Fashion-MNIST", "",
             f"Command: `{command}`  ", f"Machine: {environment()}  ",
             f"Recipe: `{recipe}` (built-in recipes live in `src/deepshrink/recipes/`). "
             "Bytes are real file sizes (header, codebooks, biases included); the ratio divides the "
             "float32 size of all parameters by them. Test accuracy after the last stage is measured "
             "on the network decoded from the file. Epochs are selected on the 5,000-sample validation "
             "split carved from the training data; the test set is only reported.", ""]
    lines += ["| model | stage | val acc | test acc | bytes | ratio | wall time |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        for s in r["stages"]:
            wall = r["train_seconds"] if s["stage"] == "baseline" else s["seconds"]
            lines.append(f"| {r['model']} | {s['stage']} | {100 * s['val_accuracy']:.2f}% | "
                         f"{100 * s['test_accuracy']:.2f}% | {s['file_bytes']:,} | {s['ratio']:.1f}× | {wall:.0f} s |")
    lines += ["", "The same final models, coded four ways (no retraining between them):", "",
              "| model | coder | file bytes | ratio | test acc (from file) | drop vs dense | target | paper (MNIST) | encode | load |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        base = r["baseline_test_accuracy"]
        for c, v in r["coders"].items():
            drop = 100 * (base - v["test_accuracy"])
            ok = "met" if v["ratio"] >= TARGET[r["model"]] and drop <= 0.5 else "missed"
            lines.append(f"| {r['model']} | {c} | {v['file_bytes']:,} | {v['ratio']:.1f}× | "
                         f"{100 * v['test_accuracy']:.2f}% | {drop:+.2f} pts | ≥{TARGET[r['model']]:.0f}×, ≤0.5 pts: {ok} | "
                         f"{PAPER[r['model']]} | {1000 * v['encode_s']:.0f} ms | {1000 * v['load_s']:.0f} ms |")
    lines += ["", "Per layer (Huffman file):", "",
              "| model | layer | shape | kept | bits | index bytes | weight bytes | ratio |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for row in r["layers"]:
            lines.append(f"| {r['model']} | {row['name']} | {'×'.join(map(str, row['shape']))} | "
                         f"{100 * row['kept']:.1f}% | {row['bits']} | {row['index_bytes']:,} | "
                         f"{row['weight_bytes']:,} | {row['ratio']:.1f}× |")
    lines += ["", "Coded size of each stream next to its empirical (order-0) entropy. The layout (dense or "
              "sparse) and gap width are chosen per tensor by measured size, so the coders' streams can differ:", "",
              "| model | coder | tensor | stream | symbols | alphabet | entropy bytes | coded bytes | overhead |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for c in ("huffman", "ans", "fixed"):
            for h in r["coders"][c]["streams"]:
                over = f"{100 * (h['coded_bytes'] / h['entropy_bytes'] - 1):+.1f}%" if h["entropy_bytes"] else "-"
                lines.append(f"| {r['model']} | {c} | {h['tensor']} | {h['stream']} | {h['symbols']:,} | {h['alphabet']} | "
                             f"{h['entropy_bytes']:,.0f} | {h['coded_bytes']:,} | {over} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["lenet-300-100", "lenet-5"], choices=sorted(EPOCHS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", default=None,
                        help="one recipe for every model (default: deep-compression, and deep-compression-lenet5 for lenet-5)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = ds.load_dataset("fashion-mnist", val_size=5000, seed=args.seed)
    results = [run(m, data, ds.load_recipe(args.recipe or RECIPE[m]), args.seed) for m in args.models]
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "deep_compression.json").write_text(json.dumps(results, indent=1, default=list))
    command = "python bench/deep_compression.py " + " ".join(sys.argv[1:])
    recipes = args.recipe or ", ".join(f"{RECIPE[m]} ({m})" for m in args.models)
    update_section("deep-compression", markdown(results, command.strip(), recipes))
    for r in results:
        print(f"{r['model']}: {100 * r['baseline_test_accuracy']:.2f}% → {100 * r['final_test_accuracy']:.2f}% "
              f"at {r['ratio']:.1f}× ({r['file_bytes']:,} bytes)")


if __name__ == "__main__":
    main()
