"""``deepshrink analyze`` on LeNet-300-100 and LeNet-5 (Fashion-MNIST), its runtime, and the three
research questions of issue 11 answered from its measurements:

1. how sensitive each layer is to low-rank approximation (SVD and SLR curves per layer);
2. the effect of sparsity on low rank: singular-value spectra of each layer dense, magnitude-pruned
   (no retraining) and pruned + retrained (the Deep Compression files of bench/runtime.py);
3. whether a robustness measure can drive lossy compression: one-shot pruning of each layer by
   magnitude against pruning by Optimal Brain Damage saliency ½·F·w² (Fisher diagonal), and the
   layers' noise tolerance and Fisher information against their measured pruning sensitivity.

The dense models are bench/toolbox.py's (cached safetensors). ``analyze`` runs through the CLI
with one thread (``--threads 1``) so its wall time is the command's. Results go to
``bench/results/analysis.json``, plots to ``docs/img/analysis-*.png`` and a section of
docs/benchmarks.md. Scores are on the validation split carved from the training data.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, environment, update_section  # noqa: E402
from toolbox import NETS, data_for, dense_path, load_dense  # noqa: E402

RUNS = ROOT / "runs" / "analysis"
RESULTS = ROOT / "bench" / "results" / "analysis.json"
IMG = ROOT / "docs" / "img"
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)
DC_FILES = {"lenet-300-100": ("lenet-300-100.safetensors", "lenet-300-100--deep-compression.dsz"),
            "lenet-5": ("lenet-5.safetensors", "lenet-5--deep-compression-lenet5.dsz")}


def run_analyze(net: str, seed: int) -> dict:
    """``deepshrink analyze`` through the CLI (cached), with its wall time."""
    out = RUNS / f"{net}-seed{seed}.json"
    log = RUNS / f"{net}-seed{seed}.cli.json"
    if not out.exists():
        RUNS.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "deepshrink", "analyze", "--model", net, "--weights",
                               str(dense_path(net, seed)), "--val-size", "5000", "--seed", str(seed), "-o", str(out),
                               "--json", "--no-progress", "--threads", "1"], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stdout + proc.stderr)
        log.write_text(json.dumps({**json.loads(proc.stdout), "wall_seconds": time.perf_counter() - t0}))
    return {"doc": json.loads(out.read_text()), "cli": json.loads(log.read_text())}


def obd_against_magnitude(net: str, seed: int) -> list[dict]:
    """Per layer and sparsity: validation score after one-shot pruning of that layer alone by
    magnitude and by OBD saliency (Fisher diagonal over 2,000 training samples)."""
    from deepshrink.analysis.robustness import fisher_information, saliency
    from deepshrink.pipeline.context import CompressContext
    from deepshrink.prune import magnitude_mask
    from deepshrink.train import get_objective

    data = data_for(seed)
    model = load_dense(net, seed, data.num_classes)
    ctx = CompressContext.create(model, data, get_objective("classify"), progress=False)
    batches, loss = ctx.calibration(2000)
    fisher = fisher_information(model, ctx.layers, batches, loss)
    rows = []
    for name, layer in ctx.layers.items():
        w = layer.weight.detach().clone()
        sal = torch.from_numpy(saliency(w, fisher[name]["diag"])).float()
        for s in SPARSITIES:
            row = {"layer": name, "sparsity": s}
            for rule, score in (("magnitude", w.abs()), ("obd", sal)):
                keep = magnitude_mask(score, sparsity=s)
                with torch.no_grad():
                    layer.weight.copy_(w * keep)
                row[rule] = ctx.evaluate(model, "val")
            with torch.no_grad():
                layer.weight.copy_(w)
            rows.append(row)
    return rows


def spectra_after_retraining(net: str) -> list[dict]:
    """Spectra of each layer of bench/runtime.py's dense model and its Deep Compression file."""
    import deepshrink as ds
    from deepshrink.analysis.spectra import compare_spectra
    from deepshrink.prune import current_weight, prunable_layers
    from safetensors.torch import load_file

    dense_name, dsz = DC_FILES[net]
    base = ROOT / "runs" / "bench-runtime"
    if not (base / dsz).exists():
        return []
    model = ds.build_model(net)
    model.load_state_dict(load_file(str(base / dense_name)))
    state = ds.load(base / dsz).net.named_graph_tensors()
    out = []
    for name, layer in prunable_layers(model).items():
        key = next((k for k in state if k.endswith(f"{name}.weight")), None)
        if key is None:
            continue
        rec = compare_spectra(current_weight(layer), state[key].reshape(layer.weight.shape), layer=name)
        out.append({k: v for k, v in rec.items() if not isinstance(v, list) or k in ("ranks",)})
    return out


def plots(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # 1. low-rank sensitivity per layer, next to pruning, on real bytes
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, net in zip(axes, NETS):
        doc = results[net]["doc"]
        base = doc["baseline"]["val"]
        for c in doc["curves"]:
            if c["technique"] not in ("svd", "slr", "prune"):
                continue
            pts = sorted(c["points"], key=lambda p: p["bytes"])
            style = {"svd": "-", "slr": "--", "prune": ":"}[c["technique"]]
            ax.plot([p["bytes"] for p in pts], [100 * (base - p["val"]) for p in pts], style, marker=".",
                    label=f"{c['layer']} {c['technique']}")
        ax.set_xscale("log")
        ax.set_ylim(-0.5, 30)
        ax.set_xlabel("layer bytes (coded)")
        ax.set_ylabel("validation drop, points (no retraining)")
        ax.set_title(net)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(IMG / "analysis-lowrank.png", dpi=110)
    plt.close(fig)
    # 2. spectra: cumulative energy dense vs pruned (90 %, no retraining)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, net in zip(axes, NETS):
        for i, s in enumerate(results[net]["doc"]["spectra"]):
            for key, style in (("dense", "-"), ("pruned", "--")):
                v = np.asarray(s[key]) ** 2
                e = np.cumsum(v) / v.sum()
                ax.plot(np.arange(1, len(e) + 1) / len(e), e, style, color=f"C{i}", label=f"{s['layer']} {key}")
        ax.axhline(0.9, color="grey", lw=0.5)
        ax.set_xlabel("rank / full rank")
        ax.set_ylabel("share of squared singular values")
        ax.set_title(f"{net}: dense (solid) and 90 % magnitude-pruned (dashed)")
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(IMG / "analysis-spectra.png", dpi=110)
    plt.close(fig)


def render(results: dict, command: str) -> None:
    lines = [f"Command: `{command}`", "", environment(), ""]
    lines += ["| network | layers | analyze wall time (1 thread, CLI) | sensitivity | noise | Fisher + Hessian | spectra |",
              "|---|---|---|---|---|---|---|"]
    for net in NETS:
        r = results[net]
        p = r["doc"]["seconds_by_part"]
        lines.append(f"| {net} | {len(r['doc']['layers'])} | {r['cli']['wall_seconds'] / 60:.1f} min | "
                     f"{p['sensitivity']:.0f} s | {p['noise']:.0f} s | {p['fisher']:.0f} s | {p['spectra']:.0f} s |")
    lines += ["", "**Low-rank sensitivity** (validation drop in points, no retraining, at a fraction of the layer's "
              "weights kept by the factors):", "",
              "| network | layer | SVD 5 % | SVD 10 % | SVD 20 % | SVD 30 % | SLR 10 % | SLR 20 % | prune to 10 % kept |",
              "|---|---|---|---|---|---|---|---|---|"]
    for net in NETS:
        doc = results[net]["doc"]
        base = doc["baseline"]["val"]
        by = {(c["layer"], c["technique"]): {p["value"]: p for p in c["points"]} for c in doc["curves"]}

        def drop(layer, tech, v):
            p = by.get((layer, tech), {}).get(v)
            return f"{100 * (base - p['val']):.1f}" if p else "–"

        for layer in [entry["name"] for entry in doc["layers"]]:
            lines.append(f"| {net} | {layer} | {drop(layer, 'svd', 0.05)} | {drop(layer, 'svd', 0.1)} | "
                         f"{drop(layer, 'svd', 0.2)} | {drop(layer, 'svd', 0.3)} | {drop(layer, 'slr', 0.1)} | "
                         f"{drop(layer, 'slr', 0.2)} | {drop(layer, 'prune', 0.9)} |")
    lines += ["", "![low-rank and pruning sensitivity per layer](img/analysis-lowrank.png)", "",
              "**Sparsity and low rank** (rank holding 90 % of the squared singular values; stable rank "
              "‖W‖²_F/‖W‖²_2): dense → magnitude-pruned at 90 % without retraining (`analyze`), and dense → "
              "the Deep Compression file (pruned and retrained, weights shared):", "",
              "| network | layer | full rank | rank90 dense → pruned 90 % | stable rank | "
              "DC sparsity | rank90 dense → DC | stable rank → DC |", "|---|---|---|---|---|---|---|---|"]
    for net in NETS:
        dc = {d["layer"]: d for d in results[net]["dc_spectra"]}
        for s in results[net]["doc"]["spectra"]:
            d = dc.get(s["layer"])
            tail = (f"{d['sparsity']:.2f} | {d['rank90_dense']} → {d['rank90_pruned']} | "
                    f"{d['stable_rank_dense']:.1f} → {d['stable_rank_pruned']:.1f}") if d else "– | – | –"
            lines.append(f"| {net} | {s['layer']} | {s['full_rank']} | {s['rank90_dense']} → {s['rank90_pruned']} | "
                         f"{s['stable_rank_dense']:.1f} → {s['stable_rank_pruned']:.1f} | {tail} |")
    lines += ["", "![spectra dense and pruned](img/analysis-spectra.png)", "",
              "**Robustness against sensitivity**: per layer, the noise scale (σ/std W) at which validation drops "
              "0.5 points, the Fisher information per weight, Hutchinson's Hessian trace per weight, and "
              "one-shot pruning of that layer by magnitude against OBD saliency ½·F·w² (validation %, no retraining):",
              "", "| network | layer | noise for −0.5 pt | Fisher / weight | Hessian trace / weight | "
              + " | ".join(f"{int(100 * s)} %: magnitude / OBD" for s in SPARSITIES) + " |",
              "|---|---|---|---|---|" + "---|" * len(SPARSITIES)]
    for net in NETS:
        doc = results[net]["doc"]
        base = doc["baseline"]["val"]
        fisher = {f["layer"]: f for f in doc["fisher"]}
        obd = results[net]["obd"]
        for layer in [entry["name"] for entry in doc["layers"]]:
            pts = next(n["points"] for n in doc["noise"] if n["layer"] == layer)
            tol = next((p["scale"] for p in pts if 100 * (base - p["val"]) >= 0.5), None)
            params = next(entry["params"] for entry in doc["layers"] if entry["name"] == layer)
            f = fisher[layer]
            cells = [f"{100 * r['magnitude']:.1f} / {100 * r['obd']:.1f}" for r in obd if r["layer"] == layer]
            lines.append(f"| {net} | {layer} | {'> ' + str(pts[-1]['scale']) if tol is None else tol} | "
                         f"{f['per_weight']:.2e} | {f['hessian_trace'] / params:.2e} | " + " | ".join(cells) + " |")
    update_section("analysis", "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--command", default="python bench/analysis.py")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = {}
    for net in NETS:
        r = run_analyze(net, args.seed)
        cache = RUNS / f"{net}-seed{args.seed}.extra.json"
        if cache.exists():
            extra = json.loads(cache.read_text())
        else:
            extra = {"obd": obd_against_magnitude(net, args.seed), "dc_spectra": spectra_after_retraining(net)}
            cache.write_text(json.dumps(extra))
        results[net] = {**r, **extra}
        print(f"{net}: analyze {r['cli']['wall_seconds'] / 60:.1f} min", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({n: {"seconds": r["doc"]["seconds_by_part"], "wall": r["cli"]["wall_seconds"],
                                       "obd": r["obd"], "dc_spectra": r["dc_spectra"],
                                       "fisher": r["doc"]["fisher"], "noise": r["doc"]["noise"]}
                                   for n, r in results.items()}, indent=1))
    plots(results)
    render(results, args.command)


if __name__ == "__main__":
    main()
