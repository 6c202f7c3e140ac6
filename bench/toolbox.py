"""The whole toolbox side by side on Fashion-MNIST: every compression family of deepshrink, run
from its built-in recipe on LeNet-300-100 and LeNet-5, with test accuracy from the file, file
bytes, ratio and batch-1 latency; a Pareto plot of accuracy against bytes; and the runs that
answer the research questions (distillation against the same student trained on labels alone,
dense-sparse-dense before Deep Compression, DCT coding against k-means sharing at equal bits).

Every (network, method, seed) is one job. Jobs run in ``--jobs`` worker processes (one torch
thread each) and each writes its result to ``runs/bench-toolbox/jobs/`` as soon as it finishes,
so an interrupted run resumes where it stopped (``--force`` reruns). Dense baselines are trained
once per network and seed (same settings as bench/deep_compression.py) and cached as
safetensors files. ``--render`` only rebuilds docs/benchmarks.md and the plot from the cached
results.

Hyperparameters of every recipe were chosen on the validation split carved from the training
data; the test split is only reported.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, environment, update_section  # noqa: E402

RUNS = ROOT / "runs" / "bench-toolbox"
RESULTS = ROOT / "bench" / "results" / "toolbox.json"
PLOT = ROOT / "docs" / "img" / "toolbox-pareto.png"
NETS = ("lenet-300-100", "lenet-5")
EPOCHS = {"lenet-300-100": 20, "lenet-5": 10}  # the dense baselines, as bench/deep_compression.py
VAL_SIZE = 5000

#: method -> built-in recipe per network (None: the method does not apply to that network).
DC = {"lenet-300-100": "deep-compression", "lenet-5": "deep-compression-lenet5"}
METHODS: dict[str, dict[str, str | None]] = {
    "deep-compression": DC,
    "lowrank-chain": dict.fromkeys(NETS, "lowrank-chain"),
    "int8": dict.fromkeys(NETS, "int8"),
    "int4": dict.fromkeys(NETS, "int4"),
    "binary": dict.fromkeys(NETS, "binary"),
    "ternary": dict.fromkeys(NETS, "ternary"),
    "soft-sharing": {"lenet-300-100": "soft-sharing", "lenet-5": "soft-sharing-lenet5"},
    "dsd": dict.fromkeys(NETS, "dsd"),
    "dct": dict.fromkeys(NETS, "dct"),
    "hashed": dict.fromkeys(NETS, "hashed"),
    "structured": dict.fromkeys(NETS, "structured"),
    "distill-lenet-300-100": {"lenet-300-100": None, "lenet-5": "distill-lenet-300-100"},
    "distill-half": dict.fromkeys(NETS, "distill-half"),
}
#: Runs for the research questions, each the partner of a method above.
QUESTIONS: dict[str, dict[str, str | None]] = {
    # the distillation recipe's student, trained on the labels alone (distill weight 0), same epochs and settings
    "direct-lenet-300-100": METHODS["distill-lenet-300-100"],
    "direct-half": METHODS["distill-half"],
    # the DSD recipe's dense result, compressed again by Deep Compression (compare with deep-compression)
    "dsd+deep-compression": METHODS["dsd"],
    # k-means sharing of the same layers at the DCT recipe's bits, no transform (compare with dct)
    "kmeans-at-dct-bits": METHODS["dct"],
    # the binary and ternary recipes without their int8 first layer (LeNet-300-100's first layer holds 88% of its weights)
    "binary-first-too": {"lenet-300-100": "binary", "lenet-5": None},
    "ternary-first-too": {"lenet-300-100": "ternary", "lenet-5": None},
    "int4-first-too": {"lenet-300-100": "int4", "lenet-5": None},
}
ALL = {**METHODS, **QUESTIONS}


# --- jobs ----------------------------------------------------------------------------------------

def dense_path(net: str, seed: int, val_size: int = VAL_SIZE) -> Path:
    """The cached dense baseline; one per validation size, since the validation samples are left
    out of its training."""
    suffix = "" if val_size == VAL_SIZE else f"-val{val_size}"
    return RUNS / "dense" / f"{net}-seed{seed}{suffix}.safetensors"


def data_for(seed: int, val_size: int = VAL_SIZE):
    import deepshrink as ds

    return ds.load_dataset("fashion-mnist", val_size=val_size, seed=seed)


def train_dense(net: str, seed: int, val_size: int = VAL_SIZE) -> dict:
    """Train (or find cached) the dense baseline of ``net`` for ``seed``."""
    import deepshrink as ds
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    path = dense_path(net, seed, val_size)
    if path.exists():
        return {"net": net, "seed": seed, "cached": True}
    data = data_for(seed, val_size)
    torch.manual_seed(seed)
    model = ds.build_model(net, num_classes=data.num_classes)
    t0 = time.perf_counter()
    ds.fit(model, data.tensors("train"), data.tensors("val"), ds.TrainConfig(epochs=EPOCHS[net], seed=seed),
           desc=f"train {net}", progress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)
    return {"net": net, "seed": seed, "seconds": time.perf_counter() - t0}


def load_dense(net: str, seed: int, num_classes: int, val_size: int = VAL_SIZE) -> torch.nn.Module:
    import deepshrink as ds
    from safetensors.torch import load_file

    model = ds.build_model(net, num_classes=num_classes)
    model.load_state_dict(load_file(str(dense_path(net, seed, val_size))))
    return model.eval()


def recipe_for(method: str, net: str):
    """The recipe a method runs on ``net`` (built-in, or derived from one for the question runs)."""
    import deepshrink as ds
    from deepshrink.recipes import LayerRules, Recipe

    recipe = ds.load_recipe(ALL[method][net])
    if method.startswith("direct-"):  # the student on the labels alone: distill weight 0, all else equal
        stages = tuple(replace(s, train=replace(s.train, distill=0.0)) if s.kind == "distill" else s
                       for s in recipe.stages)
        return Recipe(f"{recipe.name} (labels only)", stages, recipe.description)
    if method.endswith("-first-too"):
        stages = tuple(replace(s, layers=LayerRules(tuple((p, r) for p, r in s.layers.rules if p != "_first")))
                       if s.kind == "quantize" else s for s in recipe.stages)
        return Recipe(f"{recipe.name} (first layer too)", stages, recipe.description)
    if method == "kmeans-at-dct-bits":  # the dct stage's layers and bits, shared by k-means instead
        (dct,) = [s for s in recipe.stages if s.kind == "dct"]
        rules = {p: {"bits": r.get("bits", dct.bits)} for p, r in dct.layers.rules if not r.get("skip")}
        share = {"kind": "share", "init": "linear", "float16": True, "layers": rules}
        for s in recipe.stages:  # the same fine-tuning budget
            if s.kind == "dct":
                share["finetune"] = s.finetune.to_dict()
        return Recipe.from_dict({"name": "kmeans-at-dct-bits", "stages": [share, {"kind": "code"}]})
    return recipe


def latency(dense: torch.nn.Module, blob: bytes, shape: tuple[int, ...]) -> dict:
    """Batch-1 seconds per call of the dense baseline, of the network decoded from the file to
    dense and of the file run by the compressed runtime (kernels chosen at load), interleaved
    (bench/_timing.py), one thread."""
    import deepshrink as ds
    from _timing import side_by_side

    nets = {"dense": dense, "file": ds.load(blob), "compressed": ds.load(blob, mode="compressed")}
    x = torch.randn(1, *shape)
    with torch.inference_mode():
        t = side_by_side({k: (lambda n=n: n(x)) for k, n in nets.items()}, rounds=9, min_seconds=0.02)
    return {f"{k}_s": v["median_s"] for k, v in t.items()}


def run_job(net: str, method: str, seed: int) -> dict:
    """One (network, method, seed): compress the cached dense baseline with the method's recipe
    and measure the file."""
    import deepshrink as ds

    torch.set_num_threads(1)
    data = data_for(seed)
    dense = load_dense(net, seed, data.num_classes)
    recipe = recipe_for(method, net)
    t0 = time.perf_counter()
    result = ds.compress(dense, data, recipe, meta={"model": net}, progress=False)
    out = {"net": net, "method": method, "seed": seed, "recipe": recipe.name}
    if method == "dsd+deep-compression":  # DSD's dense network, compressed again
        out["dsd_dense_test_accuracy"] = result.stages[-1].test_accuracy
        result = ds.compress(result.model, data, ds.load_recipe(DC[net]), meta={"model": net}, progress=False)
    seconds = time.perf_counter() - t0
    stages = result.stages
    code_last = stages[-1].stage == "code"
    out.update({
        "dense_test_accuracy": stages[0].test_accuracy if method != "dsd+deep-compression" else None,
        "baseline_test_accuracy": result.baseline.test_accuracy,
        "val_accuracy": stages[-1].val_accuracy,
        "test_accuracy": result.file_accuracy,
        "file_bytes": result.file_bytes,
        "dense_bytes": result.dense_bytes,
        "ratio": result.ratio,
        # the last stage before the code stage is measured with fixed-length codes (no entropy coding)
        "fixed_bytes": stages[-2].file_bytes if code_last and len(stages) > 2 else result.file_bytes,
        "stages": [{"stage": s.stage, "test_accuracy": s.test_accuracy, "val_accuracy": s.val_accuracy,
                    "file_bytes": s.file_bytes, "seconds": s.seconds} for s in stages],
        "layers": [{"name": r.name, "shape": list(r.shape), "encoding": r.encoding, "bits": r.bits,
                    "bytes": r.index_bytes + r.weight_bytes} for r in result.layers],
        "seconds": seconds,
        **latency(dense, result.data, tuple(data.input_spec.shape)),
    })
    if out["dense_test_accuracy"] is None:  # (the report takes the original network's from the same seed's runs)
        out["dense_test_accuracy"] = out["baseline_test_accuracy"]
    return out


def job_path(net: str, method: str, seed: int) -> Path:
    return RUNS / "jobs" / f"{net}__{method}__seed{seed}.json"


# --- report --------------------------------------------------------------------------------------

def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarise(jobs: list[dict]) -> dict:
    """Per network and method: means and spreads over seeds."""
    out: dict[str, dict[str, dict]] = {}
    dense = {(j["net"], j["seed"]): j["dense_test_accuracy"] for j in jobs if j["method"] == "deep-compression"}
    for j in jobs:
        if j["method"] == "dsd+deep-compression" and (j["net"], j["seed"]) in dense:
            j = {**j, "dense_test_accuracy": dense[j["net"], j["seed"]]}  # the drop from the original dense network
        out.setdefault(j["net"], {}).setdefault(j["method"], {"runs": []})["runs"].append(j)
    for net, methods in out.items():
        for method, m in methods.items():
            runs = sorted(m["runs"], key=lambda r: r["seed"])
            acc = [100 * r["test_accuracy"] for r in runs]
            drop = [100 * (r["dense_test_accuracy"] - r["test_accuracy"]) for r in runs]
            m.update({
                "seeds": [r["seed"] for r in runs], "recipe": runs[0]["recipe"],
                "acc": _mean_std(acc), "drop": _mean_std(drop),
                "bytes": statistics.fmean(r["file_bytes"] for r in runs),
                "fixed_bytes": statistics.fmean(r["fixed_bytes"] for r in runs),
                "ratio": statistics.fmean(r["ratio"] for r in runs),
                "fixed_ratio": statistics.fmean(r["dense_bytes"] / r["fixed_bytes"] for r in runs),
                "latency_us": statistics.median(1e6 * r["file_s"] for r in runs),
                "speed": statistics.median(r["dense_s"] / r["file_s"] for r in runs),
                "compressed_speed": statistics.median(r["dense_s"] / r["compressed_s"] for r in runs),
                "seconds": statistics.fmean(r["seconds"] for r in runs),
                "dense_acc": _mean_std([100 * r["dense_test_accuracy"] for r in runs]),
            })
            if method == "dsd+deep-compression":
                m["dsd_dense"] = _mean_std([100 * r["dsd_dense_test_accuracy"] for r in runs])
    return out


def plotted(method: str) -> bool:
    """Whether a method is a point of the plot and the Pareto front: every compressed file, not the
    students trained on labels alone (the distillation question's control)."""
    return not method.startswith("direct-")


def pareto(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The points no other point beats on both bytes (fewer) and accuracy (higher), by bytes."""
    front, best = [], -math.inf
    for p in sorted(points, key=lambda p: (p[0], -p[1])):
        if p[1] > best:
            front.append(p)
            best = p[1]
    return front


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(7 * len(summary), 5.5))
    axes = [axes] if len(summary) == 1 else list(axes)
    for ax, (net, methods) in zip(axes, summary.items()):
        pts = [(m["bytes"], m["acc"][0], name) for name, m in methods.items() if plotted(name)]
        for b, a, name in pts:
            ax.scatter(b, a, s=30)
            ax.annotate(name, (b, a), textcoords="offset points", xytext=(4, 3), fontsize=7)
        front = pareto(pts)
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=1, label="Pareto front")
        dense = statistics.fmean(m["dense_acc"][0] for m in methods.values())
        ax.axhline(dense, color="grey", lw=0.8, label=f"dense {dense:.2f}%")
        ax.set_xscale("log")
        ax.set_xlabel("file bytes (log)")
        ax.set_ylabel("test accuracy from the file (%)")
        ax.set_title(f"{net}, Fashion-MNIST")
        lo = min(p[1] for p in pts)
        ax.set_ylim(max(lo - 1, dense - 12), dense + 1)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pm(ms: tuple[float, float], n: int) -> str:
    return f"{ms[0]:.2f}" + (f" ± {ms[1]:.2f}" if n > 1 else "")


def markdown(summary: dict, command: str) -> str:
    lines = [f"Command: {command}  " if "`" in command else f"Command: `{command}`  ", f"Machine: {environment()}; one torch thread per job.  ",
             "Every method runs from its built-in recipe on the same dense baselines (LeNet-300-100: 20 epochs, "
             "LeNet-5: 10 epochs; 5,000 validation samples carved from the training data, where every recipe's "
             "settings were chosen). Accuracy is measured on the network decoded from the file; mean ± standard "
             "deviation over the seeds listed. *Fixed* is the file before entropy coding (fixed-length codes, the "
             "stage before `code`). Latency: batch 1, one thread, interleaved with the dense baseline: the network "
             "decoded from the file to dense PyTorch, and the file run by `load(mode=\"compressed\")` (each "
             "layer's kernel measured fastest at load).", ""]
    for net, methods in summary.items():
        lines += [f"### {net}", "",
                  "| method | recipe | seeds | test acc (%) | drop (pts) | file bytes | ratio | fixed bytes | "
                  "fixed ratio | batch-1 latency | vs dense | compressed runtime vs dense | compress time |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        order = [m for m in ALL if m in methods]
        for name in order:
            m = methods[name]
            n = len(m["seeds"])
            lines.append(
                f"| {name} | `{m['recipe']}` | {','.join(map(str, m['seeds']))} | {_pm(m['acc'], n)} | "
                f"{_pm(m['drop'], n)} | {m['bytes']:,.0f} | {m['ratio']:.1f}× | {m['fixed_bytes']:,.0f} | "
                f"{m['fixed_ratio']:.1f}× | {m['latency_us']:.1f} µs | {m['speed']:.2f}× | {m['compressed_speed']:.2f}× | "
                f"{m['seconds']:.0f} s |")
        front = pareto([(m["bytes"], m["acc"][0], k) for k, m in methods.items() if plotted(k)])
        lines += ["", "Pareto front (fewest bytes for the accuracy): " + " → ".join(
            f"{k} ({b:,.0f} B, {a:.2f}%)" for b, a, k in front) + ".", ""]
    lines += [f"![accuracy against file bytes](img/{PLOT.name})", ""]
    lines += targets(summary)
    lines += questions(summary)
    return "\n".join(lines)


def _paired(methods: dict, a: str, b: str) -> str:
    """Mean ± std over the seeds both ran of accuracy(a) - accuracy(b), in points."""
    ra = {r["seed"]: r["test_accuracy"] for r in methods[a]["runs"]}
    rb = {r["seed"]: r["test_accuracy"] for r in methods[b]["runs"]}
    diffs = [100 * (ra[s] - rb[s]) for s in sorted(set(ra) & set(rb))]
    if not diffs:
        return "no common seeds"
    m, sd = _mean_std(diffs)
    return f"{m:+.2f}" + (f" ± {sd:.2f}" if len(diffs) > 1 else "") + f" pts ({len(diffs)} seeds)"


def questions(summary: dict) -> list[str]:
    """The side-by-side runs behind the four research questions."""
    rows = ["Research questions, side by side (same dense baselines and seeds):", "",
            "| question | network | A | B | A − B, paired by seed |", "|---|---|---|---|---|"]

    def cell(m: dict, what: str = "acc") -> str:
        n = len(m["seeds"])
        return f"{_pm(m['acc'], n)}%, {m['bytes']:,.0f} B ({m['ratio']:.1f}×)"

    for net, methods in summary.items():
        for student in ("lenet-300-100", "half"):
            a, b = f"distill-{student}", f"direct-{student}"
            if a in methods and b in methods:
                rows.append(f"| distillation vs the same student on labels alone | {net} | distilled: "
                            f"{cell(methods[a])} | labels only: {cell(methods[b])} | {_paired(methods, a, b)} |")
        if "dsd" in methods:
            m = methods["dsd"]
            drops = [100 * (r["test_accuracy"] - r["dense_test_accuracy"]) for r in m["runs"]]
            mean, sd = _mean_std(drops)
            rows.append(f"| DSD vs the dense baseline | {net} | DSD: {_pm(m['acc'], len(m['seeds']))}% | dense: "
                        f"{_pm(m['dense_acc'], len(m['seeds']))}% | {mean:+.2f}" + (f" ± {sd:.2f}" if len(drops) > 1 else "")
                        + f" pts ({len(drops)} seeds) |")
        pairs = [("Deep Compression after DSD vs on the baseline", "dsd+deep-compression", "deep-compression"),
                 *((f"{q} vs int8", q, "int8")  # the 8-bit grid, which loses nothing, is the reference
                   for q in ("binary", "ternary", "binary-first-too", "ternary-first-too")),
                 ("DCT coding vs pruning + k-means sharing (Deep Compression), about equal bytes", "dct",
                  "deep-compression"),
                 ("soft weight-sharing vs k-means sharing, both after pruning", "soft-sharing", "deep-compression"),
                 ("DCT coding vs k-means sharing at the same bits", "dct", "kmeans-at-dct-bits")]
        for question, a, b in pairs:
            if a in methods and b in methods:
                rows.append(f"| {question} | {net} | {a}: {cell(methods[a])} | {b}: {cell(methods[b])} | "
                            f"{_paired(methods, a, b)} |")
    return rows + [""]


def targets(summary: dict) -> list[str]:
    rows = ["Targets of issue 10:", "", "| target | measured | verdict |", "|---|---|---|"]
    l5 = summary.get("lenet-5", {})
    if "ternary" in l5:
        m = l5["ternary"]
        ok = m["drop"][0] <= 1.0 and m["fixed_ratio"] >= 16
        rows.append(f"| ternary LeNet-5: ≤ 1 pt drop at ≥ 16× before entropy coding | {m['drop'][0]:.2f} pts at "
                    f"{m['fixed_ratio']:.1f}× (fixed codes), {m['ratio']:.1f}× coded | {'met' if ok else 'missed'} |")
    for net, methods in summary.items():
        if "int8" in methods:
            m = methods["int8"]
            ok = m["drop"][0] <= 0.2 and m["ratio"] >= 4
            rows.append(f"| int8 per-channel post-training, {net}: ≤ 0.2 pt drop at ≥ 4× | {m['drop'][0]:.2f} pts at "
                        f"{m['ratio']:.2f}× | {'met' if ok else 'missed'} |")
    if "soft-sharing" in l5 and "deep-compression" in l5:
        s, d = l5["soft-sharing"], l5["deep-compression"]
        ok = s["ratio"] > d["ratio"] and s["acc"][0] >= d["acc"][0] - 0.1
        rows.append(f"| soft weight-sharing beats Deep Compression's ratio at equal accuracy, LeNet-5 | soft "
                    f"{s['ratio']:.1f}× at {s['acc'][0]:.2f}%, Deep Compression {d['ratio']:.1f}× at {d['acc'][0]:.2f}% "
                    f"| {'met' if ok else 'missed'} |")
    return rows + [""]


def render(command: str) -> None:
    jobs = [json.loads(p.read_text()) for p in sorted((RUNS / "jobs").glob("*.json"))]
    if not jobs:
        raise SystemExit(f"no results in {RUNS / 'jobs'}; run the benchmark first")
    summary = summarise(jobs)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"jobs": jobs}, indent=1))
    plot(summary, PLOT)
    update_section("toolbox", markdown(summary, command))
    print(markdown(summary, command))


def main() -> None:
    import deepshrink as ds

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=NETS)
    parser.add_argument("--methods", nargs="+", default=list(ALL), choices=list(ALL))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--seeds-lenet5", nargs="+", type=int, default=None,
                        help="seeds for LeNet-5 (default: --seeds); its runs cost about 5× LeNet-300-100's")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one torch thread each)")
    parser.add_argument("--force", action="store_true", help="rerun jobs that have a result")
    parser.add_argument("--render", action="store_true", help="only rebuild the report from cached results")
    parser.add_argument("--command", default=None,
                        help="with --render: the benchmark command(s) that produced the cached results, for the report")
    args = parser.parse_args()
    command = ("python bench/toolbox.py " + " ".join(sys.argv[1:])).strip()
    if args.render:
        render(args.command or command)
        return
    builtin = set(ds.builtin_recipes())
    seeds = {net: (args.seeds_lenet5 if net == "lenet-5" and args.seeds_lenet5 else args.seeds) for net in args.nets}
    todo = [(net, m, s) for net in args.nets for m in args.methods for s in seeds[net]
            if ALL[m][net] is not None and ALL[m][net] in builtin
            and (args.force or not job_path(net, m, s).exists())]
    skipped = sorted({m for m in args.methods for net in args.nets
                      if ALL[m][net] is not None and ALL[m][net] not in builtin})
    if skipped:
        print(f"no built-in recipe yet for: {', '.join(skipped)} (skipped)")
    from tqdm import tqdm

    with ProcessPoolExecutor(args.jobs) as pool:
        bases = {(net, s) for net, _, s in todo}
        for f in tqdm(as_completed([pool.submit(train_dense, n, s) for n, s in bases]), total=len(bases),
                      desc="dense baselines"):
            f.result()
        # the costly networks first, so that the pool's last jobs are short
        todo.sort(key=lambda j: (j[0] != "lenet-5", j[2], j[1]))
        futures = {pool.submit(run_job, *j): j for j in todo}
        for f in tqdm(as_completed(futures), total=len(futures), desc="compress jobs"):
            net, m, s = futures[f]
            try:
                out = f.result()
            except Exception as exc:  # a failing method is reported, the others go on
                print(f"FAILED {net} {m} seed {s}: {type(exc).__name__}: {exc}", flush=True)
                continue
            p = job_path(net, m, s)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.with_suffix(".tmp").write_text(json.dumps(out, indent=1))
            p.with_suffix(".tmp").replace(p)
            tqdm.write(f"{net} {m} seed {s}: {100 * out['test_accuracy']:.2f}% {out['file_bytes']:,} B "
                       f"({out['ratio']:.1f}×) in {out['seconds']:.0f} s")
    render(command)


if __name__ == "__main__":
    main()
