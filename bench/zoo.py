"""The zoo's three pretrained networks, compressed: size, fidelity or accuracy, wall time, peak memory.

For MobileNetV2 (ImageNet weights; judged against the dense network on natural-image crops:
top-1 agreement, top-5 overlap, KL), all-MiniLM-L6-v2 (judged against the dense sentence
embeddings on Debian package descriptions: mean cosine, top-10 neighbour overlap) and ccexam's
MNIST CNN (accuracy on mnist-5k), run the built-in Deep Compression recipe, a truncated-SVD
recipe and the chain (prune → low rank → share → code) side by side, each in its own process
so that its peak memory (max RSS) and wall time are its own. Writes docs/benchmarks.md (section
``zoo``) and bench/results/zoo.json.

    python bench/zoo.py [--networks mobilenet-v2 minilm-l6 ccexam-mnist-cnn] [--threads 2]

Targets (issue 8): MobileNetV2 ≥ 10× smaller with top-1 agreement ≥ 97 %; MiniLM ≥ 8× smaller
with mean cosine ≥ 0.98 and neighbour overlap ≥ 90 %, in ≤ 4 GB and ≤ 30 minutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _report import ROOT, environment, update_section  # noqa: E402

#: The recipes per network: the built-in one, then the bench's SVD and chain variants.
RECIPES = {
    "mobilenet-v2": ["mobilenet-v2", "bench/recipes/mobilenet-v2-svd.toml", "bench/recipes/mobilenet-v2-chain.toml"],
    "minilm-l6": ["minilm-l6", "bench/recipes/minilm-l6-svd.toml", "bench/recipes/minilm-l6-chain.toml"],
    "ccexam-mnist-cnn": ["ccexam-mnist-cnn", "bench/recipes/ccexam-mnist-cnn-svd.toml",
                         "bench/recipes/ccexam-mnist-cnn-chain.toml"],
}
#: The data each network is retrained and judged on (the zoo's source, sized for this 2-core machine:
#: MobileNetV2 trains at about 3 crops/s at 224 px here, so its crops are 160 px and fewer; 99.9 % of the
#: Debian descriptions fit in 30 tokens, so MiniLM reads 32).
DATA = {
    "mobilenet-v2": {"sizes": {"train": 768, "val": 128, "test": 512}, "size": 160},
    "minilm-l6": {"sizes": {"train": 2000, "val": 250, "test": 750}, "max_length": 32},
    "ccexam-mnist-cnn": {},
}
TARGETS = {
    "mobilenet-v2": {"ratio": 10.0, "top1_agreement": 0.97},
    "minilm-l6": {"ratio": 8.0, "mean_cosine": 0.98, "top10_overlap": 0.90, "peak_gb": 4.0, "minutes": 30.0},
}


def worker(network: str, recipe_spec: str, threads: int, out: Path) -> None:
    """One compression run in this process; writes its measurements to ``out``."""
    import torch

    import deepshrink as ds
    from deepshrink.data.sources import open_source
    from deepshrink.models import ZOO, create

    torch.set_num_threads(threads)
    entry = ZOO[network].pretrained
    t0 = time.perf_counter()
    model = create(network)
    data = open_source(entry.data, **DATA[network])
    recipe = ds.load_recipe(ROOT / recipe_spec if recipe_spec.endswith(".toml") else recipe_spec)
    result = ds.compress(model, data, recipe, objective=entry.objective, meta={"model": network})
    seconds = time.perf_counter() - t0
    out.write_text(json.dumps({
        "code": _commit(),
        "network": network, "recipe": recipe.name, "objective": result.objective, "metric": result.metric,
        "dense_bytes": result.dense_bytes, "file_bytes": result.file_bytes, "ratio": result.ratio,
        "split_sizes": result.split_sizes, "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "baseline_test_metrics": result.baseline.test_metrics,
        "final_test_metrics": result.final.test_metrics,
        "final_val": result.final.val_accuracy,
        "stages": [{"stage": s.stage, "val": s.val_accuracy, "test": s.test_accuracy, "file_bytes": s.file_bytes,
                    "seconds": s.seconds} for s in result.stages],
    }, indent=1))


def _commit() -> str:
    """The commit the run's code is (with `+` when the tree has changes)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    return (git("rev-parse", "--short", "HEAD") or "unknown") + ("+" if git("status", "--porcelain", "src") else "")


def _fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.4f}" if metric in ("mean_cosine", "mean_kl") else f"{100 * v:.2f}%"


def report(runs: list[dict], threads: int, command: str) -> str:
    lines = [
        "## The zoo's pretrained networks (issue 8)", "",
        f"Command: `{command}`. {environment()}; each run in its own process with {threads} torch threads; "
        "wall time includes loading the network and building the data. Fidelity is measured on the network decoded "
        "from the file, on the test split, against the dense network (MobileNetV2, MiniLM) or the labels (ccexam).", "",
        "| network | recipe | file | ratio | test metrics | val (primary) | wall | peak RSS | code |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    dense_done = set()
    for r in runs:
        if r["network"] not in dense_done:
            dense_done.add(r["network"])
            metrics = ", ".join(f"{k} {_fmt(k, v)}" for k, v in r["baseline_test_metrics"].items())
            lines.append(f"| {r['network']} | dense | {r['dense_bytes'] / 1e6:.2f} MB | 1.0× | {metrics} | | | | |")
        metrics = ", ".join(f"{k} {_fmt(k, v)}" for k, v in r["final_test_metrics"].items())
        lines.append(
            f"| {r['network']} | `{r['recipe']}` | {r['file_bytes'] / 1e6:.3f} MB | {r['ratio']:.1f}× | {metrics} | "
            f"{_fmt(r['metric'], r['final_val'])} | {r['seconds'] / 60:.1f} min | {r['peak_rss_mb'] / 1024:.2f} GB | "
            f"{r.get('code', '?')} |"
        )
    lines += ["", "Data: " + "; ".join(
        f"{r['network']}: {r['split_sizes']['train']:,} train / {r['split_sizes']['val']:,} val / "
        f"{r['split_sizes']['test']:,} test" for r in {r["network"]: r for r in runs}.values()) + "."]
    verdicts = []
    for r in runs:
        t = TARGETS.get(r["network"])
        if not t or r["recipe"] != r["network"]:
            continue
        checks = [f"ratio {r['ratio']:.1f}× (≥ {t['ratio']}×)"]
        ok = r["ratio"] >= t["ratio"]
        for k in ("top1_agreement", "mean_cosine", "top10_overlap"):
            if k in t:
                v = r["final_test_metrics"][k]
                checks.append(f"{k} {_fmt(k, v)} (≥ {_fmt(k, t[k])})")
                ok &= v >= t[k]
        if "peak_gb" in t:
            checks.append(f"peak {r['peak_rss_mb'] / 1024:.2f} GB (≤ {t['peak_gb']} GB), "
                          f"{r['seconds'] / 60:.1f} min (≤ {t['minutes']} min)")
            ok &= r["peak_rss_mb"] / 1024 <= t["peak_gb"] and r["seconds"] / 60 <= t["minutes"]
        verdicts.append(f"- {r['network']}: {'met' if ok else 'missed'}: " + "; ".join(checks))
    if verdicts:
        lines += ["", "Targets, for the built-in recipe of each network:", *verdicts]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--recipes", nargs="+", default=None, help="only these recipes (names or paths)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--render", action="store_true",
                        help="only rewrite docs/benchmarks.md from bench/results/zoo.json (runs made separately)")
    parser.add_argument("--worker", nargs=3, metavar=("NETWORK", "RECIPE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        network, recipe, out = args.worker
        worker(network, recipe, args.threads, Path(out))
        return
    results = HERE / "results"
    if args.render:
        runs = json.loads((results / "zoo.json").read_text())
        update_section("zoo", report(runs, args.threads, "python bench/zoo.py --networks NAME` for each network, one at a time, then "
                                                        "`python bench/zoo.py --render"))
        return
    runs = []
    results.mkdir(exist_ok=True)
    for network in args.networks:
        for recipe in RECIPES[network]:
            if args.recipes and recipe not in args.recipes:
                continue
            out = results / f".zoo-{network}-{Path(recipe).stem}.json"
            print(f"== {network}: {recipe}", flush=True)
            done = subprocess.run([sys.executable, __file__, "--threads", str(args.threads),
                                   "--worker", network, recipe, str(out)], check=False)
            if done.returncode != 0:
                print(f"   failed with exit code {done.returncode}", flush=True)
                continue
            runs.append(json.loads(out.read_text()))
            out.unlink()
            r = runs[-1]
            print(f"   {r['ratio']:.1f}×, {r['final_test_metrics']}, {r['seconds'] / 60:.1f} min, "
                  f"{r['peak_rss_mb'] / 1024:.2f} GB", flush=True)
    (results / "zoo.json").write_text(json.dumps(runs, indent=1))
    command = "python bench/zoo.py" + (f" --networks {' '.join(args.networks)}" if args.networks != list(RECIPES)
                                       else "") + (f" --threads {args.threads}" if args.threads != 2 else "")
    update_section("zoo", report(runs, args.threads, command))
    print(report(runs, args.threads, command))


if __name__ == "__main__":
    main()
