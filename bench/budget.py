"""The automatic budget on Fashion-MNIST: ``compress --max-drop`` (and ``--target-bytes``) on
LeNet-300-100 and LeNet-5, against the hand-written Deep Compression recipes and uniform
per-layer settings at equal bytes.

Every (network, job, seed) is one job, written to ``runs/bench-budget/`` when it finishes (the
file, the recipe the budget chose, and a JSON record), so an interrupted run resumes; the measured
layer table of each (network, seed) is cached too. ``--workers 2`` runs two (network, seed) pairs
at once, one torch thread each. The dense
baselines are bench/toolbox.py's (trained once per network and seed, cached as safetensors).

Jobs:
- ``max-drop``: ``auto_compress`` with ``Target(max_drop=--drop)`` on the recipe
  ``deep-compression`` with coder ``--coder``: no per-network settings at all.
- ``uniform``: the same recipe with ONE sparsity and ONE bit width for every layer, chosen (by the
  same measured layer table, no retraining) as the uniform setting whose predicted bytes are
  closest to the max-drop file's without exceeding them; then the full recipe. Equal bytes,
  different allocation.
- the hand-written recipes: bench/toolbox.py's Deep Compression jobs (read from its cache).

Every setting is chosen on the validation split carved from the training data; the test split
is only reported. ``--render`` rebuilds the doc section from the cached results.
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

from deepshrink.util.atomic import write_bytes_atomic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, environment, update_section  # noqa: E402
from toolbox import NETS, RUNS as TOOLBOX_RUNS, VAL_SIZE, data_for, load_dense, train_dense  # noqa: E402

RUNS = ROOT / "runs" / "bench-budget"
RESULTS = ROOT / "bench" / "results" / "budget.json"
TOOLBOX_RESULTS = ROOT / "bench" / "results" / "toolbox.json"
RAMP_RUNS = ROOT / "runs" / "bench-ramp"  # bench/prune_ramp.py: the hand-written recipes with each ramp
JOBS = ("max-drop", "uniform")


def job_path(net: str, job: str, seed: int, tag: str) -> Path:
    return RUNS / f"{net}__{job}__{tag}__seed{seed}.json"


def _record(res, net: str, seed: int) -> dict:
    return {"net": net, "seed": seed, "file_bytes": res.file_bytes, "ratio": res.ratio,
            "dense_bytes": res.dense_bytes, "test_accuracy": res.file_accuracy,
            "baseline_test_accuracy": res.baseline.test_accuracy, "val_accuracy": res.final.val_accuracy,
            "baseline_val_accuracy": res.baseline.val_accuracy,
            "test_drop": 100 * (res.baseline.test_accuracy - res.file_accuracy),
            "val_drop": 100 * (res.baseline.val_accuracy - res.final.val_accuracy),
            "layers": [{"name": r.name, "kept": r.kept, "bits": r.bits, "bytes": r.index_bytes + r.weight_bytes}
                       for r in res.layers]}


def _drop_on(model, small, part) -> tuple[float, float, int]:
    """``small``'s drop (points) against ``model`` on ``part``'s validation split, its paired
    standard error (``paired_drop``) and the number of samples."""
    from deepshrink.analysis.budget import paired_drop
    from deepshrink.pipeline.context import CompressContext, load_splits
    from deepshrink.train import get_objective

    obj = get_objective("classify")
    ctx = CompressContext.create(model, part, obj, progress=False, splits=load_splits(part, obj))
    return (*paired_drop(model, small, ctx), len(ctx.splits["val"]))


def _write_json(path: Path, record: dict) -> None:
    write_bytes_atomic(path, json.dumps(record, indent=1).encode())


def half_drops(model, small, data) -> dict:
    """``small``'s drop (points) against ``model`` on each half of ``data``'s validation split
    (``split_check``): the search half and the confirm half."""
    from deepshrink.analysis.budget import split_check

    search, held = split_check(data)
    return {"search": _drop_on(model, small, search)[0], "confirm": _drop_on(model, small, held)[0]}


def confirm_check(model, data, blob: bytes) -> dict:
    """The file's drop (points) on the confirm half of the validation split (``split_check``),
    which the budget keeps from its search, and its paired standard error."""
    import deepshrink as ds
    from deepshrink.analysis.budget import split_check

    drop, se, n = _drop_on(model, ds.load(blob), split_check(data)[1])
    return {"check_drop": drop, "check_se": se, "check_samples": n}


def measured_table(net: str, seed: int, coder: str, val_size: int):
    """The budget's measured layer table (``measure_budget``, with the control run, on the search
    half of the validation split), cached."""
    import deepshrink as ds
    from deepshrink.analysis.budget import Measured, measure_budget

    cache = RUNS / f"{net}__points-control-val{val_size}__{coder}__seed{seed}.json"
    if cache.exists():
        return Measured.from_dict(json.loads(cache.read_text()))
    data = data_for(seed, val_size)
    model = load_dense(net, seed, data.num_classes, val_size)
    t0 = time.perf_counter()
    measured = measure_budget(model, data, ds.load_recipe("deep-compression").with_coder(coder), progress=False)
    _write_json(cache, {**measured.to_dict(), "seconds": time.perf_counter() - t0})
    return measured


def run_max_drop(net: str, seed: int, args: argparse.Namespace) -> dict:
    import deepshrink as ds
    from deepshrink.analysis.budget import Target, auto_compress

    drop, coder, tag, val_size = args.drop, args.coder, args.tag, args.val_size
    train_dense(net, seed, val_size)
    data = data_for(seed, val_size)
    model = load_dense(net, seed, data.num_classes, val_size)
    recipe = ds.load_recipe("deep-compression").with_coder(coder)
    t0 = time.perf_counter()
    measured = measured_table(net, seed, coder, val_size)
    target = Target(max_drop=drop) if args.confidence is None else Target(max_drop=drop, confidence=args.confidence)
    b = auto_compress(model, data, recipe, target, progress=False, measured=measured,
                      log=lambda m: print(f"[{net} seed {seed}] {m}", flush=True))
    stem = job_path(net, "max-drop", seed, tag).with_suffix("")
    write_bytes_atomic(stem.with_suffix(".dsz"), b.result.data)
    write_bytes_atomic(stem.with_suffix(".recipe.toml"), b.recipe.to_toml().encode())
    return {**_record(b.result, net, seed), "job": "max-drop", "tag": tag, "drop": drop, "coder": coder,
            "val_size": val_size, "confidence": target.confidence,
            **confirm_check(model, data, b.result.data),
            "seconds": time.perf_counter() - t0, "budget": b.to_dict(),
            "options": {n: [{**o.setting, "bytes": o.bytes, "drop": o.drop} for o in opts]
                        for n, opts in b.options.items()}}


def run_uniform(net: str, seed: int, tag: str, val_size: int) -> dict:
    """One sparsity and one bit width for every layer, at the max-drop file's predicted bytes."""
    import deepshrink as ds
    from deepshrink.analysis.budget import Allocation, Option, budget_recipe, last_epochs, split_check
    from deepshrink.pipeline import compress
    from deepshrink.pipeline.context import layer_table

    ref = json.loads(job_path(net, "max-drop", seed, tag).read_text())
    budget_bytes = ref["budget"]["allocation"]["bytes"]
    opts = ref["options"]
    settings = {(o["prune"], o["share"]) for o in next(iter(opts.values()))}
    best = None
    for s in settings:
        total = sum(next(o["bytes"] for o in layer if (o["prune"], o["share"]) == s) for layer in opts.values())
        drop = sum(next(o["drop"] for o in layer if (o["prune"], o["share"]) == s) for layer in opts.values())
        if total <= budget_bytes and (best is None or (total, -drop) > (best[1], -best[2])):
            best = (s, total, drop)
    if best is None:
        raise SystemExit(f"{net} seed {seed}: no uniform setting fits in {budget_bytes} bytes")
    data = data_for(seed, val_size)
    model = load_dense(net, seed, data.num_classes, val_size)
    _, kinds = layer_table(model)
    alloc = Allocation({n: Option({"prune": best[0][0], "share": best[0][1]}, 0, 0.0) for n in opts}, best[1], best[2])
    recipe = budget_recipe(ds.load_recipe("deep-compression").with_coder(ref["coder"]), alloc, kinds, "uniform")
    t0 = time.perf_counter()
    res = compress(model, split_check(data)[0], last_epochs(recipe), progress=False)  # as the budget's runs
    return {**_record(res, net, seed), "job": "uniform", **confirm_check(model, data, res.data), "tag": tag, "sparsity": best[0][0], "bits": best[0][1],
            "predicted_bytes": best[1], "seconds": time.perf_counter() - t0}


def hand(net: str) -> list[dict]:
    """bench/toolbox.py's Deep Compression runs of ``net`` (the hand-written recipe): its run cache,
    else its committed results."""
    out = [json.loads(p.read_text())
           for p in sorted((TOOLBOX_RUNS / "jobs").glob(f"{net}__deep-compression__seed*.json"))]
    if not out and TOOLBOX_RESULTS.exists():
        out = [j for j in json.loads(TOOLBOX_RESULTS.read_text())["jobs"]
               if j["net"] == net and j["method"] == "deep-compression"]
    return out


def _mean(xs):
    return statistics.mean(xs) if xs else float("nan")


def _sd(xs):
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def backfill(tag: str) -> None:
    """Add ``check_drop`` and ``check_se`` to max-drop records written before they were recorded
    (from their saved files)."""
    for p in sorted(RUNS.glob(f"*__max-drop__{tag}__seed*.json")):
        r = json.loads(p.read_text())
        if "check_se" in r:
            continue
        data = data_for(r["seed"], r.get("val_size", VAL_SIZE))
        model = load_dense(r["net"], r["seed"], data.num_classes, r.get("val_size", VAL_SIZE))
        r.update(confirm_check(model, data, p.with_suffix(".dsz").read_bytes()))
        _write_json(p, r)


def _print_table(header: list[str], rows: list[str], last: str) -> None:
    """A markdown table: ``header``, ``rows`` (already formatted lines) and a summary line."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    print("\n".join([*rows, last]))


def halves(tags: list[str]) -> None:
    """Where the check was optimistic: for each chosen file of a tag, its drop on each half of the
    validation split (``split_check``) and on test. Before the confirm half (tags ``confidence``,
    ``cubic``), the held-out half decided the search and the runs chose their epochs on the other.
    Prints a markdown table."""
    import deepshrink as ds

    rows, sums = [], {"check": [], "search": [], "test": []}
    for tag in tags:
        for p in sorted(RUNS.glob(f"*__max-drop__{tag}__seed*.json")):
            r = json.loads(p.read_text())
            data = data_for(r["seed"], r["val_size"])
            model = load_dense(r["net"], r["seed"], data.num_classes, r["val_size"])
            drops = half_drops(model, ds.load(p.with_suffix(".dsz").read_bytes()), data)
            out = {"check": drops["confirm"], "search": drops["search"], "test": r["test_drop"]}
            for k, v in out.items():
                sums[k].append(v)
            rows.append(f"| {r['net']} | {tag} | {r['seed']} | {r['ratio']:.1f}× | {out['check']:.2f} | "
                        f"{out['search']:.2f} | {out['test']:.2f} |")
    if not rows:
        raise SystemExit(f"no max-drop record of tags {', '.join(map(repr, tags))} in {RUNS}")
    _print_table(["network", "tag", "seed", "ratio", "held-out half", "other half", "test"], rows,
                 f"| mean of {len(rows)} | | | | {_mean(sums['check']):.2f} | {_mean(sums['search']):.2f} | "
                 f"{_mean(sums['test']):.2f} |")


def retrain_noise(tag: str, nets: list[str], seeds: list[int], retrain_seeds: list[int]) -> None:
    """How much a run's own training moves its file: each chosen recipe of ``tag`` rerun as the
    budget runs it (search data, last epochs), with the retraining seed (batch order) changed,
    each file measured on both halves of the validation split and on test. Runs are cached in
    ``runs/bench-budget/{net}__retrain__{tag}__seed{s}__r{k}.json``. Prints a markdown table."""
    import deepshrink as ds
    from deepshrink.analysis.budget import _map_trainings, split_check
    from deepshrink.pipeline import compress

    rows, spread = [], {"search": [], "confirm": [], "test": []}
    for net in nets:
        for seed in seeds:
            stem = job_path(net, "max-drop", seed, tag).with_suffix("")
            if not stem.with_suffix(".json").exists():
                continue
            r = json.loads(stem.with_suffix(".json").read_text())
            data = data_for(seed, r["val_size"])
            model = load_dense(net, seed, data.num_classes, r["val_size"])
            search = split_check(data)[0]
            chosen = ds.load_recipe(stem.with_suffix(".recipe.toml"))
            out = {"search": [], "confirm": [], "test": []}
            for k in retrain_seeds:
                cache = RUNS / f"{net}__retrain__{tag}__seed{seed}__r{k}.json"
                if not cache.exists():
                    recipe = _map_trainings(chosen, lambda cfg, k=k: replace(cfg, seed=k))
                    res = compress(model, search, recipe, progress=False)
                    rec = {"file_bytes": res.file_bytes, **half_drops(model, ds.load(res.data), data),
                           "test": 100 * (res.baseline.test_accuracy - res.file_accuracy)}
                    _write_json(cache, rec)
                rec = json.loads(cache.read_text())
                for key in out:
                    out[key].append(rec[key])
            for key in out:
                spread[key].append(_sd(out[key]))
            rows.append(f"| {net} | {seed} | {r['ratio']:.1f}× | {len(retrain_seeds)} | "
                        + " | ".join(f"{_mean(out[k]):.2f} ± {_sd(out[k]):.2f}" for k in out) + " |")
    if not rows:
        raise SystemExit(f"no max-drop record of tag {tag!r} for {', '.join(nets)} seeds {seeds} in {RUNS}")
    _print_table(["network", "seed", "ratio", "retraining seeds", "search half", "confirm half", "test"], rows,
                 f"| mean spread (sd) | | | | {_mean(spread['search']):.2f} | {_mean(spread['confirm']):.2f} | "
                 f"{_mean(spread['test']):.2f} |")


def _fmt(x: float) -> str:
    return "–" if x != x else f"{x:.2f}"


def _row(net: str, label: str, rs: list[dict]) -> str:
    """One line of the summary table: mean test drop ± its spread over seeds, validation check, bytes, ratio."""
    return (f"| {net} | {label} | {', '.join(str(r['seed']) for r in rs)} | "
            f"{_mean([r['test_drop'] for r in rs]):.2f} ± {_sd([r['test_drop'] for r in rs]):.2f} | "
            f"{_fmt(_mean([r['check_drop'] for r in rs if 'check_drop' in r]))} | "
            f"{_mean([r['file_bytes'] for r in rs]):,.0f} | "
            f"{_mean([r['ratio'] for r in rs]):.1f}× |")


def render(command: str, tag: str) -> None:
    rows = []
    records = {}
    for p in sorted(RUNS.glob(f"*__{tag}__seed*.json")):
        if p.name.split("__")[1] not in JOBS:  # measured tables, retraining-noise reruns
            continue
        r = json.loads(p.read_text())
        records.setdefault((r["net"], r["job"]), []).append(r)
    lines = [f"Command: `{command}`", "", environment(), "",
             "| network | method | seeds | test drop (points) | check drop (confirm half) | bytes | ratio |",
             "|---|---|---|---|---|---|---|"]
    for net in NETS:
        for job, label in (("max-drop", "budget, `--max-drop 0.5`"), ("uniform", "uniform per-layer, equal bytes")):
            rs = records.get((net, job), [])
            if not rs:
                continue
            rows.append((net, job, rs))
            lines.append(_row(net, label, rs))
        ramped = [json.loads(p.read_text()) for p in sorted(RAMP_RUNS.glob(f"{net}__cubic-4__val*__seed*.json"))]
        if ramped:
            lines.append(_row(net, "hand-written Deep Compression, cubic ramp (bench/prune_ramp.py)", ramped))
        hs = hand(net)
        if hs:
            lines.append(f"| {net} | hand-written Deep Compression, linear ramp (bench/toolbox.py) | "
                         f"{', '.join(str(h.get('seed')) for h in hs)} | "
                         f"{_mean([100 * (h['baseline_test_accuracy'] - h['test_accuracy']) for h in hs]):.2f} | | "
                         f"{_mean([h['file_bytes'] for h in hs]):,.0f} | {_mean([h['ratio'] for h in hs]):.1f}× |")
    runs = [r for net in NETS for r in records.get((net, "max-drop"), [])]
    samples = sorted({r.get("check_samples", 2500) for r in runs})
    conf = sorted({r.get("confidence", 0.5) for r in runs})
    lines += ["", f"Each `--max-drop` run, accepted at confidence {', '.join(f'{c:g}' for c in conf)} "
              f"(± the standard error of the check's drop, {', '.join(f'{n:,}' for n in samples)} paired samples):", "",
              "| network | seed | bytes | ratio | test drop | check drop (confirm half) | "
              "compress runs | minutes |", "|---|---|---|---|---|---|---|---|"]
    for net in NETS:
        for r in records.get((net, "max-drop"), []):
            lines.append(f"| {net} | {r['seed']} | {r['file_bytes']:,} | {r['ratio']:.1f}× | {r['test_drop']:.2f} | "
                         f"{_fmt(r.get('check_drop', float('nan')))} ± {_fmt(r.get('check_se', float('nan')))} | "
                         f"{len(r['budget']['runs'])} | "
                         f"{r['seconds'] / 60:.0f} |")
    lines += ["", "Per-layer choices of the budget (seed 0):", ""]
    for net in NETS:
        for r in records.get((net, "max-drop"), [])[:1]:
            lines.append(f"- {net}: " + ", ".join(
                f"{n} sparsity {v['prune']:g}, {int(v['share'])} bits ({v['bytes']:,} B)"
                for n, v in r["budget"]["allocation"]["layers"].items())
                + f"; {len(r['budget']['runs'])} compress runs, {r['seconds'] / 60:.0f} min")
    _write_json(RESULTS, {f"{n}/{j}": rs for (n, j), rs in records.items()})
    update_section("budget", "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=NETS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--jobs", nargs="+", default=list(JOBS), choices=JOBS)
    ap.add_argument("--drop", type=float, default=0.5)
    ap.add_argument("--coder", default="ans")
    ap.add_argument("--tag", default="ans", help="names this configuration's results")
    ap.add_argument("--val-size", type=int, default=VAL_SIZE,
                    help="validation samples carved from the training data (half of them confirm the chosen file)")
    ap.add_argument("--confidence", type=float, default=None, help="Target.confidence (default: the library's)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--workers", type=int, default=1, help="(network, seed) pairs run in parallel processes")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--render", action="store_true")
    ap.add_argument("--halves", nargs="+", metavar="TAG", default=None,
                    help="print each chosen file's drop on both halves of validation and on test (older tags)")
    ap.add_argument("--retrain-seeds", nargs="+", type=int, metavar="K", default=None,
                    help="rerun each chosen recipe of --tag with these retraining seeds (batch order) and print "
                         "its files' drops on both halves and on test")
    ap.add_argument("--command", default="python bench/budget.py")
    args = ap.parse_args()
    if args.retrain_seeds:
        torch.set_num_threads(args.threads)
        retrain_noise(args.tag, args.nets, args.seeds, args.retrain_seeds)
        return
    if args.halves:
        halves(args.halves)
        return
    if args.render:
        backfill(args.tag)
        render(args.command, args.tag)
        return
    RUNS.mkdir(parents=True, exist_ok=True)
    pairs = [(net, seed) for net in args.nets for seed in args.seeds]
    if args.workers == 1:
        for net, seed in pairs:
            run_pair(net, seed, args)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(args.workers) as pool:  # one (network, seed) per worker, one thread each
        for f in [pool.submit(run_pair, net, seed, args) for net, seed in pairs]:
            f.result()


def run_pair(net: str, seed: int, args: argparse.Namespace) -> None:
    """The jobs of one network and seed, in order (uniform needs max-drop's result)."""
    torch.set_num_threads(args.threads)
    for job in args.jobs:
        path = job_path(net, job, seed, args.tag)
        if path.exists() and not args.force:
            continue
        rec = (run_max_drop(net, seed, args) if job == "max-drop"
               else run_uniform(net, seed, args.tag, args.val_size))
        _write_json(path, rec)
        print(f"{net} {job} seed {seed}: {rec['file_bytes']:,} B ({rec['ratio']:.1f}x), test drop "
              f"{rec['test_drop']:.2f}, val drop {rec['val_drop']:.2f}", flush=True)

if __name__ == "__main__":
    main()
