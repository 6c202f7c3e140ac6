"""Does distillation beat training the same student on the labels? A fair comparison.

Both arms train the same student architecture with the same epochs budget, the same schedule and
the same tuning effort, each trial scored on the validation split (never the test split): both
tune the learning rate on the same grid, crossed with one knob of their own with two values -- the
soft targets' weight and temperature ``(a, T)`` for the distilled arm, the weight decay for the
label arm (``distill = 0``; both are regularisers). The best trial of each arm (run with the first
seed) is then run with the other seeds, and the test accuracy is reported as mean ± std over the
seeds. Every run is :func:`deepshrink.distill.train_student`, the code the ``distill`` stage runs.

Run it as ``python -m deepshrink.distill.compare --teacher lenet-5 --student lenet-300-100``
(the teacher is first trained on the same training split the students see); ``--dsd`` compares
dense-sparse-dense with training the dense network on for the same epochs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepshrink.data.sources import DataSource
from deepshrink.train.loop import TrainConfig, evaluate
from deepshrink.train.objectives import get_objective

#: Learning rates both arms try (Adam, cosine schedule).
LR_GRID = (1e-3, 2e-3, 4e-3)
#: ``(a, T)`` of the distilled arm (Hinton et al. weigh the soft targets heavily at temperatures of
#: a few units).
DISTILL_GRID = ((0.5, 2.0), (0.8, 4.0))
#: Weight decays of the label arm: as many as the distilled arm's ``(a, T)``.
DECAY_GRID = (0.0, 1e-4)


def compare(teacher: nn.Module, data: DataSource, *, student: str = "lenet-300-100", width: float = 0.5,
            init: str = "random", base: TrainConfig | None = None, seeds: tuple[int, ...] = (0, 1, 2),
            lr_grid: tuple[float, ...] = LR_GRID, distill_grid: tuple[tuple[float, float], ...] = DISTILL_GRID,
            decay_grid: tuple[float, ...] = DECAY_GRID, log=None) -> dict[str, Any]:
    """The comparison on ``data`` (see the module's docstring); ``base`` is the students' training
    (default: the ``distill`` stage's, 20 epochs at lr 1e-3). Returns the trials, the chosen
    settings, and per arm the test accuracies per seed with their mean and standard deviation."""
    from deepshrink.distill import train_student
    from deepshrink.distill.stage import DistillStage

    base = base or DistillStage().train
    objective = get_objective("classify")
    test = data.split("test")

    def run(cfg: TrainConfig, seed: int) -> dict[str, Any]:
        report: dict[str, Any] = {}
        start = time.perf_counter()
        model = train_student(teacher, data, student=student, width=width, init=init, train=cfg, seed=seed,
                              report=report, progress=False)
        out = {"seed": seed, "val": report["val_accuracy_after"], "test": evaluate(model, test, objective),
               "seconds": time.perf_counter() - start, "parameters": report["parameters"]}
        if log:
            log(f"  a={cfg.distill} T={cfg.temperature} lr={cfg.lr} wd={cfg.weight_decay} seed={seed}: val {out['val']:.4f} "
                f"test {out['test']:.4f} ({out['seconds']:.0f} s)")
        return out

    arms = {"distilled": [replace(base, lr=lr, distill=a, temperature=t) for lr in lr_grid for a, t in distill_grid],
            "labels": [replace(base, lr=lr, distill=0.0, weight_decay=wd) for lr in lr_grid for wd in decay_grid]}
    result: dict[str, Any] = {"student": student, "width": width, "init": init, "seeds": list(seeds),
                              "epochs": base.epochs, "arms": {}}
    for arm, configs in arms.items():
        if log:
            log(f"{arm}: tuning {len(configs)} trials on the validation split (seed {seeds[0]})")
        trials = [(cfg, run(cfg, seeds[0])) for cfg in configs]
        best_cfg, best = max(trials, key=lambda t: t[1]["val"])
        runs = [best] + [run(best_cfg, s) for s in seeds[1:]]
        tests = [r["test"] for r in runs]
        result["arms"][arm] = {
            "trials": [{"distill": c.distill, "temperature": c.temperature, "lr": c.lr, "weight_decay": c.weight_decay,
                        "val": r["val"]} for c, r in trials],
            "chosen": {"distill": best_cfg.distill, "temperature": best_cfg.temperature, "lr": best_cfg.lr,
                       "weight_decay": best_cfg.weight_decay},
            "runs": runs, "test_mean": statistics.fmean(tests),
            "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
            "val_mean": statistics.fmean(r["val"] for r in runs)}
    return result


def compare_dsd(make_model, data: DataSource, *, sparsities: tuple[float, ...] = (0.5, 0.7),
                lrs: tuple[float, ...] = (1e-4, 3e-4), prune_epochs: int = 5, dense_epochs: int = 5,
                seeds: tuple[int, ...] = (0, 1, 2), log=None) -> dict[str, Any]:
    """Does the dense phase of DSD improve a trained dense network? ``make_model(seed)`` returns
    the trained dense network of a seed. The DSD arm runs ``prune`` (one step to the sparsity,
    ``prune_epochs`` of retraining at lr 1e-3) then ``dsd`` (``dense_epochs`` at the lr); the
    control trains the dense network on for the same epochs at the same learning rates, without
    pruning. The sparsity and dsd lr are chosen on the validation split (seed ``seeds[0]``), both
    arms report test accuracy per seed."""
    import copy

    import deepshrink as ds
    from deepshrink.recipes import Recipe

    def dsd_recipe(sparsity: float, lr: float) -> Recipe:
        return Recipe.from_dict({"name": "dsd", "stages": [
            {"kind": "prune", "steps": 1, "retrain": {"epochs": prune_epochs, "lr": 1e-3, "seed": 0},
             "layers": {"_default": {"sparsity": sparsity}}},
            {"kind": "dsd", "retrain": {"epochs": dense_epochs, "lr": lr}}]})

    def dsd_run(model: nn.Module, sparsity: float, lr: float) -> dict[str, float]:
        r = ds.compress(model, data, dsd_recipe(sparsity, lr), progress=False)
        return {"val": r.final.val_accuracy, "test": r.file_accuracy, "sparse_val": r.stages[1].val_accuracy}

    def control(model: nn.Module, lr: float) -> dict[str, float]:
        m = copy.deepcopy(model)
        for cfg in (TrainConfig(epochs=prune_epochs, lr=1e-3), TrainConfig(epochs=dense_epochs, lr=lr)):
            ds.fit(m, data.tensors("train"), data.tensors("val"), cfg, progress=False)
        return {"val": ds.evaluate(m, data.tensors("val")), "test": ds.evaluate(m, data.tensors("test"))}

    models = {s: make_model(s) for s in seeds}
    first = models[seeds[0]]
    trials = [{"sparsity": sp, "lr": lr, **dsd_run(first, sp, lr)} for sp in sparsities for lr in lrs]
    best = max(trials, key=lambda t: t["val"])
    ctrl_trials = [{"lr": lr, **control(first, lr)} for lr in lrs]  # the same tuning effort per lr
    best_ctrl = max(ctrl_trials, key=lambda t: t["val"])
    rows = []
    for s, model in models.items():
        row = {"seed": s, "dense_val": ds.evaluate(model, data.tensors("val")),
               "dense_test": ds.evaluate(model, data.tensors("test")),
               "dsd": dsd_run(model, best["sparsity"], best["lr"]), "control": control(model, best_ctrl["lr"])}
        rows.append(row)
        if log:
            log(f"  seed {s}: dense {row['dense_test']:.4f} dsd {row['dsd']['test']:.4f} "
                f"control {row['control']['test']:.4f}")

    def stats(values: list[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}

    return {"trials": trials, "chosen": {"sparsity": best["sparsity"], "lr": best["lr"]},
            "control_trials": ctrl_trials, "control_lr": best_ctrl["lr"], "runs": rows,
            "dense_test": stats([r["dense_test"] for r in rows]), "dsd_test": stats([r["dsd"]["test"] for r in rows]),
            "control_test": stats([r["control"]["test"] for r in rows])}


def main(argv: list[str] | None = None) -> int:
    import deepshrink as ds

    p = argparse.ArgumentParser(prog="python -m deepshrink.distill.compare", description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default="lenet-5", help="zoo architecture of the teacher, trained here first")
    p.add_argument("--teacher-epochs", type=int, default=12)
    p.add_argument("--student", default="lenet-300-100", help="zoo architecture, or 'narrow'")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--init", default="random")
    p.add_argument("--epochs", type=int, default=20, help="the students' epochs budget")
    p.add_argument("--train", type=int, default=5000, help="training samples (a subset of Fashion-MNIST's)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--teacher-weights", help="safetensors file of the trained teacher: read when it exists, "
                   "else written after training")
    p.add_argument("--dsd", action="store_true", help="compare dsd with dense training on (teacher = the network)")
    p.add_argument("--out", help="write the result as JSON here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = ds.load_dataset("fashion-mnist", val_size=5000, seed=0)
    data = data.subset(a.train, None, None, seed=0)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if a.dsd:
        def make(seed: int) -> nn.Module:
            torch.manual_seed(seed)
            m = ds.build_model(a.teacher)
            ds.fit(m, data.tensors("train"), data.tensors("val"), ds.TrainConfig(epochs=a.teacher_epochs, seed=seed),
                   progress=False)
            return m

        result = compare_dsd(make, data, seeds=tuple(range(a.seeds)), log=log)
        for arm in ("dense", "dsd", "control"):
            r = result[f"{arm}_test"]
            print(f"{arm:8s} test {100 * r['mean']:.2f} ± {100 * r['std']:.2f} %")
        print(f"chosen {result['chosen']}, control lr {result['control_lr']}")
        if a.out:
            with open(a.out, "w") as f:
                json.dump(result, f, indent=1)
        return 0
    torch.manual_seed(0)
    teacher = ds.build_model(a.teacher)
    start = time.perf_counter()
    if a.teacher_weights and Path(a.teacher_weights).is_file():
        ds.load_weights(teacher, a.teacher_weights)
    else:
        ds.fit(teacher, data.tensors("train"), data.tensors("val"), ds.TrainConfig(epochs=a.teacher_epochs, seed=0),
               progress=False)
        if a.teacher_weights:
            ds.save_weights(teacher, a.teacher_weights)
    t_val, t_test = ds.evaluate(teacher, data.tensors("val")), ds.evaluate(teacher, data.tensors("test"))
    log(f"teacher {a.teacher}: val {t_val:.4f} test {t_test:.4f} ({time.perf_counter() - start:.0f} s)")
    base = TrainConfig(epochs=a.epochs, lr=1e-3)
    result = compare(teacher, data, student=a.student, width=a.width, init=a.init, base=base,
                     seeds=tuple(range(a.seeds)), log=log)
    result.update(teacher=a.teacher, teacher_val=t_val, teacher_test=t_test, train_samples=a.train,
                  split_sizes=data.split_sizes())
    for arm, r in result["arms"].items():
        print(f"{arm:9s} chosen {r['chosen']}: test {100 * r['test_mean']:.2f} ± {100 * r['test_std']:.2f} % "
              f"(val {100 * r['val_mean']:.2f} %)")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
