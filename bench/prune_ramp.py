"""How iterative pruning approaches its target: the prune stage's ``ramp`` (linear, Han et al.;
cubic, Zhu & Gupta 2017) and its number of steps, at the same total retraining epochs, on the
hand-written Deep Compression recipes (the same per-layer sparsities and bit widths).

Every (network, variant, seed) is one job, cached in ``runs/bench-ramp/``. The runs retrain and
choose their epochs on half of the validation split (the budget's ``split_check``); the other
half judges them (the held-out drop ± its paired standard error), and the test split is only
reported. Paired by seed: each seed's dense model is shared by its variants.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, environment, update_section  # noqa: E402
from budget import RAMP_RUNS as RUNS, _record, held_out_check  # noqa: E402
from toolbox import DC, NETS, data_for, load_dense, train_dense  # noqa: E402

#: variant -> (ramp, steps); the recipe's epochs per step are scaled to keep the total.
VARIANTS = {"linear-4": ("linear", 4), "cubic-4": ("cubic", 4), "cubic-8": ("cubic", 8)}


def recipe_for(net: str, variant: str):
    import deepshrink as ds
    from deepshrink.recipes.config import Recipe

    base = ds.load_recipe(DC[net])
    ramp, steps = VARIANTS[variant]
    stages = []
    for s in base.stages:
        if s.kind == "prune":
            total = s.steps * s.retrain.epochs
            s = replace(s, ramp=ramp, steps=steps, retrain=replace(s.retrain, epochs=max(1, total // steps)))
        stages.append(s)
    return Recipe(f"{base.name}-{variant}", tuple(stages), base.description)


def job_path(net: str, variant: str, seed: int, val_size: int) -> Path:
    return RUNS / f"{net}__{variant}__val{val_size}__seed{seed}.json"


def run_job(net: str, variant: str, seed: int, val_size: int) -> dict:
    from deepshrink.analysis.budget import split_check
    from deepshrink.pipeline import compress

    train_dense(net, seed, val_size)
    data = data_for(seed, val_size)
    model = load_dense(net, seed, data.num_classes, val_size)
    t0 = time.perf_counter()
    res = compress(model, split_check(data)[0], recipe_for(net, variant), progress=False)
    return {**_record(res, net, seed), "variant": variant, "val_size": val_size,
            **held_out_check(model, data, res.data), "seconds": time.perf_counter() - t0}


def run(net: str, variant: str, seed: int, args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    path = job_path(net, variant, seed, args.val_size)
    if path.exists() and not args.force:
        return
    rec = run_job(net, variant, seed, args.val_size)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=1))
    tmp.replace(path)
    print(f"{net} {variant} seed {seed}: {rec['file_bytes']:,} B ({rec['ratio']:.1f}x), test drop "
          f"{rec['test_drop']:.2f}, held-out val drop {rec['check_drop']:.2f} ± {rec['check_se']:.2f}", flush=True)


def render(command: str, val_size: int) -> None:
    lines = [f"Command: `{command}`", "", environment(), "",
             "Same per-layer sparsities, bit widths and total retraining epochs (the hand-written "
             "Deep Compression recipes); only the pruning schedule differs. Mean over seeds; "
             "the paired difference is against `linear-4` on the same seeds.", "",
             "| network | ramp, steps | seeds | bytes | held-out val drop | test drop | test drop − linear-4 |",
             "|---|---|---|---|---|---|---|"]
    for net in NETS:
        recs = {v: {r["seed"]: r for r in (json.loads(p.read_text())
                                           for p in sorted(RUNS.glob(f"{net}__{v}__val{val_size}__seed*.json")))}
                for v in VARIANTS}
        for v, rs in recs.items():
            if not rs:
                continue
            seeds = sorted(rs)
            base = recs["linear-4"]
            paired = [rs[s]["test_drop"] - base[s]["test_drop"] for s in seeds if s in base]
            diff = (f"{statistics.mean(paired):+.2f} ± {statistics.stdev(paired) / len(paired) ** 0.5:.2f}"
                    if v != "linear-4" and len(paired) > 1 else "")
            lines.append(f"| {net} | {v} | {', '.join(map(str, seeds))} | "
                         f"{statistics.mean(r['file_bytes'] for r in rs.values()):,.0f} | "
                         f"{statistics.mean(r['check_drop'] for r in rs.values()):.2f} | "
                         f"{statistics.mean(r['test_drop'] for r in rs.values()):.2f} | {diff} |")
    update_section("ramp", "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=NETS)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--val-size", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--render", action="store_true")
    ap.add_argument("--command", default="python bench/prune_ramp.py")
    args = ap.parse_args()
    if args.render:
        render(args.command, args.val_size)
        return
    RUNS.mkdir(parents=True, exist_ok=True)
    jobs = [(n, v, s) for n in args.nets for s in args.seeds for v in args.variants]
    if args.workers == 1:
        for j in jobs:
            run(*j, args)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(args.workers) as pool:
        for f in [pool.submit(run, *j, args) for j in jobs]:
            f.result()


if __name__ == "__main__":
    main()
