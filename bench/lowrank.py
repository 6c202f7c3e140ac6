"""SLR vs truncated SVD vs magnitude pruning at matched compression, and low-rank convolutions.

For LeNet-300-100 and LeNet-5 on Fashion-MNIST: train a dense baseline, then compress its fully
connected layers (all but the classifier) to the same fraction of non-zero weights with each
method, through the real pipeline (:func:`deepshrink.compress`):

* ``svd``: truncated SVD, two dense layers of rank k;
* ``slr``: Sparse Low Rank (its importance strategy, reduced rank and unimportant fraction chosen
  on the validation split, before fine-tuning, at the middle fraction);
* ``prune``: one-shot magnitude pruning, the mask fixed while fine-tuning.

Each is measured before fine-tuning and after the same fine-tuning budget (epochs, learning rate,
distillation), then after 5-bit k-means sharing and Huffman coding (stored bytes). CPU latency at
batch 1 and 64 of the files' networks (deepshrink runtime and onnxruntime) against the dense
model, median of interleaved repeats. For LeNet-5 also conv2 by spatial SVD, Tucker-2 and CP.
Writes docs/benchmarks.md, PNG plots in docs/img/ and bench/results/lowrank.json.

    python bench/lowrank.py [--models lenet-300-100 lenet-5] [--fractions 0.5 0.25 0.125 0.0625]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import onnxruntime as ort
import torch
from tqdm.auto import tqdm

import deepshrink as ds
from deepshrink.errors import DecompositionError
from deepshrink.recipes import Recipe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, environment, update_section  # noqa: E402

EPOCHS = {"lenet-300-100": 20, "lenet-5": 10}
FC = {"lenet-300-100": ["fc1", "fc2"], "lenet-5": ["fc1"]}  # the classifier layer is left alone
METHODS = ("svd", "slr", "prune")
COLORS = {"svd": "tab:blue", "slr": "tab:red", "prune": "tab:green"}
SLR_GRID = {"importance": ("weight", "activation", "taylor"), "unimportant": (0.25, 0.5, 0.75),
            "reduced_rank": (0.25, 0.5)}


SEEDS = {"lenet-300-100": 3, "lenet-5": 1}  # fine-tuning seeds (batch order) averaged per point


def finetune(epochs: int, seed: int = 0) -> dict:
    return {"epochs": epochs, "lr": 1e-3, "distill": 0.5 if epochs else 0.0, "temperature": 2.0, "seed": seed}


def method_stage(method: str, layers: list[str], fraction: float, epochs: int, slr: dict, seed: int = 0) -> dict:
    if method == "prune":
        return {"kind": "prune", "steps": 1, "retrain": finetune(epochs, seed),
                "layers": {n: {"sparsity": 1 - fraction} for n in layers}}
    settings = {"rank": fraction, **({k: v for k, v in slr.items() if k != "importance"} if method == "slr" else {})}
    stage = {"kind": "lowrank", "method": method, "finetune": finetune(epochs, seed), "layers": {n: settings for n in layers}}
    if method == "slr":
        stage["importance"] = slr["importance"]
    return stage


def share_code(epochs: int, seed: int = 0) -> list[dict]:
    return [{"kind": "share", "float16": True, "finetune": {**finetune(epochs, seed), "lr": 3e-4},
             "layers": {"_linear": {"bits": 5}, "_conv": {"bits": 8}}},
            {"kind": "code", "coder": "huffman", "layers": {"_default": {"gap_bits": "auto"}}}]


def nonzero(model: torch.nn.Module) -> int:
    return sum(int((p != 0).sum()) for n, p in model.named_parameters() if n.endswith("weight"))


def run_method(model, data, method, layers, fraction, epochs, slr, seeds) -> dict:
    """Before fine-tuning (0 epochs), then after fine-tuning, sharing and coding in one run per
    fine-tuning seed (accuracies averaged over seeds)."""
    dense_nz = nonzero(model)
    before = ds.compress(model, data, Recipe.from_dict(
        {"name": method, "stages": [method_stage(method, layers, fraction, 0, slr)]}), progress=False)
    runs = [ds.compress(model, data, Recipe.from_dict(
        {"name": method, "stages": [method_stage(method, layers, fraction, epochs, slr, seed)] + share_code(1, seed)}))
        for seed in range(seeds)]
    full, ft = runs[0], runs[0].stages[1]
    nz = nonzero(before.model)
    after = [r.stages[1].test_accuracy for r in runs]
    coded = [r.file_accuracy for r in runs]
    return {
        "method": method, "fraction": fraction, "nonzero_weights": nz, "param_ratio": dense_nz / nz,
        "before_val": before.stages[1].val_accuracy, "before_test": before.stages[1].test_accuracy,
        "after_val": statistics.mean(r.stages[1].val_accuracy for r in runs), "after_test": statistics.mean(after),
        "after_test_runs": after, "float32_bytes": ft.file_bytes, "float32_ratio": full.dense_bytes / ft.file_bytes,
        "coded_bytes": full.file_bytes, "coded_ratio": full.ratio, "coded_test": statistics.mean(coded),
        "coded_test_runs": coded, "detail": ft.detail.get("layers", ft.detail.get("targets")), "file": full.data,
    }


def tune_slr(model, data, layers, fraction) -> tuple[dict, list[dict]]:
    """SLR settings by validation accuracy before fine-tuning (the test split is not looked at)."""
    rows = []
    grid = list(itertools.product(*SLR_GRID.values()))
    for values in tqdm(grid, desc="tune SLR on val", leave=False):
        slr = dict(zip(SLR_GRID, values))
        res = ds.compress(model, data, Recipe.from_dict(
            {"name": "slr", "stages": [method_stage("slr", layers, fraction, 0, slr)]}), progress=False)
        rows.append({**slr, "val": res.stages[1].val_accuracy})
    best = max(rows, key=lambda r: r["val"])
    return {k: best[k] for k in SLR_GRID}, rows


def macs(net: torch.nn.Module, input_shape) -> int:
    """Multiply-accumulates of one sample through the linear and conv layers (dense kernels)."""
    total = 0

    def hook(mod, _args, out):
        nonlocal total
        total += mod.weight.numel() * (out[0, 0].numel() if isinstance(mod, torch.nn.Conv2d) else 1)

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    with torch.inference_mode():
        net(torch.zeros(1, *input_shape))
    for h in handles:
        h.remove()
    return total


def latency(files: dict[str, bytes], input_shape, reps: dict[int, int]) -> dict:
    """Median milliseconds per batch of each file's network, deepshrink runtime and onnxruntime,
    measured in interleaved rounds so that every model sees the same machine state."""
    nets = {k: ds.load(v) for k, v in files.items()}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sessions = {k: ort.InferenceSession(ds.to_onnx(n.graph, n.dense_state_dict(), n.input_spec.shape)
                                        .SerializeToString(), opts, providers=["CPUExecutionProvider"])
                for k, n in nets.items()}
    out = {}
    for batch, n in reps.items():
        x = torch.randn(batch, *input_shape)
        xn = x.numpy()
        times = {(k, e): [] for k in nets for e in ("torch", "onnxruntime")}
        with torch.inference_mode():
            for _ in range(5):  # warm-up
                for k in nets:
                    nets[k](x)
                    sessions[k].run(None, {sessions[k].get_inputs()[0].name: xn})
            for _ in range(n):
                for k in nets:
                    t0 = time.perf_counter()
                    nets[k](x)
                    times[(k, "torch")].append(time.perf_counter() - t0)
                    name = sessions[k].get_inputs()[0].name
                    t0 = time.perf_counter()
                    sessions[k].run(None, {name: xn})
                    times[(k, "onnxruntime")].append(time.perf_counter() - t0)
        out[batch] = {f"{k}|{e}": 1000 * statistics.median(v) for (k, e), v in times.items()}
    out["macs"] = {k: macs(n, input_shape) for k, n in nets.items()}
    return out


def conv_methods(model, data, fractions, epochs) -> list[dict]:
    rows = []
    for method, fraction in itertools.product(("spatial", "tucker", "cp"), fractions):
        stage = {"kind": "lowrank", "finetune": finetune(0), "layers": {"conv2": {"method": method, "rank": fraction}}}
        row = {"method": method, "fraction": fraction}
        try:
            before = ds.compress(model, data, Recipe.from_dict({"name": method, "stages": [stage]}), progress=False)
        except DecompositionError as exc:
            rows.append({**row, "error": str(exc).split(".")[0]})
            continue
        stage["finetune"] = finetune(epochs)
        after = ds.compress(model, data, Recipe.from_dict({"name": method, "stages": [stage]}))
        d = after.stages[1].detail["layers"]["conv2"]
        rows.append({**row, "weights": d["weights_after"], "of": d["weights_before"], "shapes": d["shapes"],
                     "before_val": before.stages[1].val_accuracy, "before_test": before.stages[1].test_accuracy,
                     "after_val": after.stages[1].val_accuracy, "after_test": after.stages[1].test_accuracy})
    return rows


def run(name: str, data: ds.Dataset, fractions: list[float], epochs: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = ds.build_model(name, num_classes=data.num_classes)
    ds.fit(model, data.tensors("train"), data.tensors("val"), ds.TrainConfig(epochs=EPOCHS[name], seed=seed),
           desc=f"train {name}")
    test = data.tensors("test")
    base = {"val": ds.evaluate(model, data.tensors("val")), "test": ds.evaluate(model, test),
            "nonzero_weights": nonzero(model)}
    mid = fractions[len(fractions) // 2]
    slr, grid = tune_slr(model, data, FC[name], mid)
    rows = [run_method(model, data, m, FC[name], f, epochs, slr, SEEDS[name]) for f in fractions for m in METHODS]
    dense_file = ds.pack_model(model, data.input_spec)[0]
    lat_fraction = 0.25 if 0.25 in fractions else mid
    files = {"dense": dense_file, **{r["method"]: r["file"] for r in rows if r["fraction"] == lat_fraction}}
    lat = latency(files, data.input_spec.shape, {1: 500, 64: 200})
    convs = conv_methods(model, data, (0.5, 0.25), epochs) if name == "lenet-5" else []
    for r in rows:
        del r["file"]
    return {"model": name, "baseline": base, "slr_settings": slr, "slr_grid": grid, "slr_fraction": mid, "rows": rows,
            "latency_fraction": lat_fraction, "latency": lat, "conv": convs, "finetune_epochs": epochs,
            "seeds": SEEDS[name]}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = [("before_test", "param_ratio", "before fine-tuning", "compression of weights (non-zeros, ×)"),
              ("after_test", "param_ratio", "after fine-tuning", "compression of weights (non-zeros, ×)"),
              ("coded_test", "coded_ratio", "+ 5-bit sharing + Huffman (from the file)", "compression of stored bytes (×)")]
    for ax, (acc, ratio, title, xlabel) in zip(axes, panels):
        for m in METHODS:
            pts = sorted((r[ratio], 100 * r[acc]) for r in result["rows"] if r["method"] == m)
            ax.plot(*zip(*pts), "o-", label=m, color=COLORS[m])
        ax.axhline(100 * result["baseline"]["test"], color="gray", ls="--", lw=1, label="dense")
        ax.set_xscale("log", base=2)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    top = 100 * result["baseline"]["test"]
    axes[0].set_ylim(max(min(100 * r["before_test"] for r in result["rows"]) - 2, 10), top + 1)
    for ax, key in ((axes[1], "after_test"), (axes[2], "coded_test")):  # zoomed: the differences are small
        ax.set_ylim(min(100 * r[key] for r in result["rows"]) - 0.3, top + 0.3)
    for ax in axes:
        ax.set_ylabel("test accuracy (%)")
    axes[0].legend()
    fig.suptitle(f"{result['model']} on Fashion-MNIST: SLR vs truncated SVD vs magnitude pruning (fc layers)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def verdict(result: dict) -> str:
    wins = {"svd": 0, "prune": 0}
    fr = sorted({r["fraction"] for r in result["rows"]}, reverse=True)
    by = {(r["method"], r["fraction"]): r for r in result["rows"]}
    for f in fr:
        for other in wins:
            wins[other] += by[("slr", f)]["after_test"] > by[(other, f)]["after_test"]
    before = sum(by[("slr", f)]["before_test"] > by[("svd", f)]["before_test"] for f in fr)
    return (f"SLR beats truncated SVD before fine-tuning at {before} of {len(fr)} fractions; after fine-tuning it "
            f"beats SVD at {wins['svd']} and one-shot pruning at {wins['prune']} of {len(fr)} fractions "
            "(test accuracy at equal non-zero weights).")


def markdown(results: list[dict], command: str) -> str:
    lines = ["## Low rank: SLR vs truncated SVD vs magnitude pruning", "",
             f"Command: `{command}`  ", f"Machine: {environment()}  ",
             "Each method compresses the fully connected layers except the classifier (LeNet-300-100: fc1, fc2; "
             "LeNet-5: fc1) to the same fraction of non-zero weights, through `deepshrink.compress`. "
             "'before' is straight after the decomposition or pruning; 'after' is after the same fine-tuning "
             "(epochs below, Adam lr 1e-3, cosine, distillation 0.5 from the dense model, best epoch on the "
             "validation split); 'coded' adds 5-bit k-means sharing (1 epoch of centroid fine-tuning), float16 "
             "codebooks and Huffman coding, accuracy measured on the network decoded from the file. "
             "Compression counts all weights of the network (non-zeros) or all stored bytes, against float32 dense. "
             "Differences of 0.1–0.2 points are within run-to-run noise (see the ± where several seeds ran).", ""]
    for r in results:
        m = r["model"]
        s = r["slr_settings"]
        lines += [f"### {m}", "",
                  f"Dense: {100 * r['baseline']['test']:.2f}% test, {r['baseline']['nonzero_weights']:,} weights. "
                  f"Fine-tuning: {r['finetune_epochs']} epochs, "
                  f"{'mean ± half-range over ' + str(r['seeds']) + ' seeds (batch order)' if r['seeds'] > 1 else 'one seed'}. SLR settings chosen on validation: importance "
                  f"`{s['importance']}`, unimportant {s['unimportant']}, reduced rank {s['reduced_rank']}·k.", "",
                  f"![{m}](img/lowrank-{m}.png)", "",
                  "| kept | method | weights ratio | test before FT | test after FT | float32 file | coded file | coded test |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            spread = (f" ± {50 * (max(row['after_test_runs']) - min(row['after_test_runs'])):.2f}"
                      if len(row["after_test_runs"]) > 1 else "")
            lines.append(f"| {100 * row['fraction']:g}% | {row['method']} | {row['param_ratio']:.2f}× | "
                         f"{100 * row['before_test']:.2f}% | {100 * row['after_test']:.2f}%{spread} | "
                         f"{row['float32_bytes']:,} B ({row['float32_ratio']:.2f}×) | "
                         f"{row['coded_bytes']:,} B ({row['coded_ratio']:.1f}×) | {100 * row['coded_test']:.2f}% |")
        lines += ["", f"**Verdict ({m}).** {verdict(r)}", ""]
        lines += [f"How the SLR settings were chosen: validation accuracy straight after factorising at "
                  f"{100 * r['slr_fraction']:g}% kept, before fine-tuning (the test split is not used):", "",
                  "| importance | unimportant | reduced rank | val acc |", "|---|---|---|---|"]
        for g in sorted(r["slr_grid"], key=lambda g: -g["val"]):
            lines.append(f"| {g['importance']} | {g['unimportant']} | {g['reduced_rank']} | {100 * g['val']:.2f}% |")
        f = r["latency_fraction"]
        lines += ["", f"CPU latency of the files' networks at {100 * f:g}% kept (median ms per batch, ratio = "
                  "dense / model; same run, interleaved):", "",
                  "| batch | engine | dense | svd | slr | prune |", "|---|---|---|---|---|---|"]
        mac = r["latency"]["macs"]
        lines.append("| | MACs per sample (dense kernels) | " + f"{mac['dense']:,} | " + " | ".join(
            f"{mac[k]:,} ({mac['dense'] / mac[k]:.2f}×)" for k in METHODS) + " |")
        for batch, t in r["latency"].items():
            if batch == "macs":
                continue
            for eng in ("torch", "onnxruntime"):
                d = t[f"dense|{eng}"]
                cells = " | ".join(f"{t[f'{k}|{eng}']:.3f} ms ({d / t[f'{k}|{eng}']:.2f}×)" for k in METHODS)
                lines.append(f"| {batch} | {eng} | {d:.3f} ms | {cells} |")
        if r["conv"]:
            lines += ["", f"{m} conv2 (20→50 channels, 5×5) by the convolution schemes, the rest of the network "
                      "unchanged; test accuracy before and after the same fine-tuning:", "",
                      "| method | kept (target) | conv2 weights | layers | test before FT | test after FT |",
                      "|---|---|---|---|---|---|"]
            for c in r["conv"]:
                if "error" in c:
                    lines.append(f"| {c['method']} | {100 * c['fraction']:g}% | raised DecompositionError: "
                                 f"{c['error']} | | | |")
                    continue
                shapes = " → ".join("×".join(map(str, s)) for s in c["shapes"])
                lines.append(f"| {c['method']} | {100 * c['fraction']:g}% | {c['weights']:,} of {c['of']:,} | "
                             f"{shapes} | {100 * c['before_test']:.2f}% | {100 * c['after_test']:.2f}% |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["lenet-300-100", "lenet-5"], choices=sorted(EPOCHS))
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.5, 0.25, 0.125, 0.0625])
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs, the same for every method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replot", action="store_true", help="only redraw the plots from bench/results/lowrank.json")
    args = parser.parse_args()
    if args.replot:
        for r in json.loads((ROOT / "bench" / "results" / "lowrank.json").read_text()):
            plot(r, ROOT / "docs" / "img" / f"lowrank-{r['model']}.png")
        return
    torch.set_num_threads(2)
    data = ds.load_dataset("fashion-mnist", val_size=5000, seed=args.seed)
    results = []
    for m in args.models:
        r = run(m, data, args.fractions, args.epochs, args.seed)
        plot(r, ROOT / "docs" / "img" / f"lowrank-{m}.png")
        results.append(r)
        print(f"{m}: {verdict(r)}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "lowrank.json").write_text(json.dumps(results, indent=1))
    command = ("python bench/lowrank.py " + " ".join(sys.argv[1:])).strip()
    update_section("lowrank", markdown(results, command))


if __name__ == "__main__":
    main()
