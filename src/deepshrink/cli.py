"""The ``deepshrink`` command line: a thin layer over the Python API.

Every command takes ``--json`` and then prints exactly one JSON object on stdout, on success and
on every failure (a wrong option included); progress bars and warnings go to stderr. Bad input
prints ``error: <message>`` on stderr (or ``{"error": ...}`` with --json) and exits with status 2;
an unexpected exception is reported in one line as a bug and exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from deepshrink._version import __version__
from deepshrink.errors import ConfigError, DataError, DeepshrinkError, ModelError
from deepshrink.util.atomic import check_target

BUG = "this is a bug in deepshrink, please report it (set DEEPSHRINK_DEBUG=1 to see the traceback)"


DEFAULT_DATA = "fashion-mnist"
"""What train and compress use without --data (Fashion-MNIST, the project's benchmark data)."""


class UsageError(Exception):
    """A command line that argparse rejects (unknown option, missing argument, bad value)."""

    def __init__(self, message: str, parser: argparse.ArgumentParser):
        super().__init__(f"{parser.prog}: {message}")
        self.text = f"{parser.format_usage()}{parser.prog}: error: {message}\n"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # raise instead of printing usage and exiting: main reports it
        raise UsageError(message, self)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows ``(default: ...)`` after every option that has one; an option without a default
    (None) says in its help what happens when it is left out."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.required:
            return action.help
        return super()._get_help_string(action)


# ----------------------------------------------------------------------------------------------
# argument types


def _int_at_least(low: int, hint: str = "") -> Any:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be ≥ {low}, got {v}{hint}")
        return v

    return parse


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return v


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _val_size(text: str) -> int | float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction, got {text!r}") from None
    if 0 < v < 1:
        return v
    if v == 0 or (v >= 1 and v == int(v) and v < 1e9):
        return int(v)
    raise argparse.ArgumentTypeError(f"expected 0 (no validation split), a whole count ≥ 1 or a fraction in (0, 1), got {text!r}")


# ----------------------------------------------------------------------------------------------
# shared helpers


class Run:
    """What a command reports besides its result: warnings, shown on stderr and in the JSON."""

    def __init__(self, args: argparse.Namespace, console: Console):
        self.args = args
        self.console = console
        self.warnings: list[str] = []
        self.threads: int | None = None

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress else None


def _load_data(args: argparse.Namespace, data: str, val_size: int | float | None, seed: int):
    """The data set with its validation split, cut down to ``--limit`` training samples when given:
    then the test split gets a fifth of that, and so does validation unless ``--val-size`` says
    otherwise (a count, or a fraction of the limited training set)."""
    from deepshrink.data import load_dataset
    from deepshrink.data.dataset import SplitWarning
    from deepshrink.data.sources import UNLABELLED

    if data in UNLABELLED:
        return _load_unlabelled(args, data, val_size)
    kwargs = {} if val_size is None else {"val_size": val_size}
    with warnings.catch_warnings():
        if args.limit:  # the split is judged on the cut-down data below
            warnings.simplefilter("ignore", SplitWarning)
        ds = load_dataset(data, seed=seed, **kwargs)
    if args.limit:
        n = max(1, args.limit // 5)
        n_val = n if val_size is None else int(round(val_size * args.limit)) if val_size < 1 else int(val_size)
        ds = ds.subset(min(args.limit, len(ds.y_train)), min(n_val, len(ds.y_val)), min(n, len(ds.y_test)),
                       seed=seed)
        for message in ds.split_warnings():
            warnings.warn(message, SplitWarning, stacklevel=2)
    return ds


def _load_unlabelled(args: argparse.Namespace, name: str, val_size: int | float | None):
    """An unlabelled source (image crops, sentences): fixed samples per split, each split drawn
    from its own photos or texts. ``--limit`` sizes the training split (a fifth of it for test and
    validation); ``--val-size`` sizes validation (a count, or a fraction of the training split)."""
    from deepshrink.data.sources import open_source

    sizes = open_source(name).split_sizes()  # the source's defaults (opening reads nothing yet)
    if args.limit:
        sizes = {"train": args.limit, "val": max(1, args.limit // 5), "test": max(1, args.limit // 5)}
    if val_size is not None:
        sizes["val"] = int(round(val_size * sizes["train"])) if isinstance(val_size, float) else int(val_size)
    return open_source(name, sizes=sizes)


def _describe_data(name: str, sizes: dict[str, int]) -> str:
    val = f"{sizes['val']:,} validation" if sizes["val"] else "no validation"
    return f"{name}: {sizes['train']:,} training, {val}, {sizes['test']:,} test samples"


def _pretrained(name: str):
    """The zoo's record of a pretrained network, or None (user code, or an architecture trained here)."""
    from deepshrink.models import ZOO

    entry = ZOO.get(name)
    return entry.pretrained if entry is not None else None


def _model(args: argparse.Namespace, num_classes: int | None):
    """The network to work on: a zoo architecture or user code, with ``--weights`` loaded; a
    pretrained zoo network comes with its packaged weights unless ``--weights`` replaces them."""
    from deepshrink.models import build_model, create, load_weights

    if ":" in args.model and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # as `python -m deepshrink` finds modules in the working directory
    weights = getattr(args, "weights", None)
    if _pretrained(args.model) is not None:
        model = create(args.model, num_classes=None, pretrained=weights is None)
    else:
        if weights is None and args.command in ("compress", "analyze"):
            raise ModelError(f"{args.command} --model {args.model} needs --weights (a safetensors file from "
                             "`deepshrink train`); only the zoo's pretrained networks come with weights "
                             "(see `deepshrink models`)")
        model = build_model(args.model, num_classes=num_classes)
    if weights is not None:
        load_weights(model, weights)
    return model


def _score(metric: str, x: float | None) -> str:
    """A metric as people read it: rates and agreements in percent, the rest (KL) as a number."""
    return f"{x:.4f}" if metric in ("mean_kl", "mean_cosine") and x is not None else _pct(x)


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def _kb(n: float) -> str:
    return f"{n / 1000:.1f} KB" if n >= 1000 else f"{int(n)} B"


def print_table(console: Console, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]],
                left: Sequence[str] = (), wrap: Sequence[str] = ()) -> None:
    """A table when it fits the console's width, else one plain line per row: names are never cut.

    ``left`` names the left-aligned columns (the others are numbers, right-aligned); only the
    columns in ``wrap`` (prose) may be wrapped onto several lines.
    """
    table = Table(title=Text(title))
    for col in columns:
        table.add_column(col, justify="left" if col in left else "right", no_wrap=col not in wrap)
    for row in rows:
        table.add_row(*(Text(str(c)) for c in row))
    widths = [max([cell_len(col), *(_min_width(str(row[i]), col in wrap) for row in rows)])
              for i, col in enumerate(columns)]
    if sum(widths) + 3 * len(widths) + 1 <= console.width:  # cell padding and rules
        console.print(table)
        return
    console.print(Text(title + ":"), soft_wrap=True)  # soft wrap: the terminal folds lines, words stay whole
    for row in rows:
        console.print(Text(f"  {row[0]}: " + ", ".join(f"{c} {v}" for c, v in zip(columns[1:], row[1:]))), soft_wrap=True)


def _min_width(cell: str, wraps: bool) -> int:
    return max(map(cell_len, cell.split()), default=0) if wraps else cell_len(cell)


# ----------------------------------------------------------------------------------------------
# commands


def cmd_train(run: Run) -> dict[str, Any]:
    from deepshrink.models import save_weights
    from deepshrink.train import TrainConfig, evaluate, fit

    import torch

    args = run.args
    check_target(args.output)  # before any work
    data = _load_data(args, args.data, args.val_size, args.seed)
    sizes = data.split_sizes()
    torch.manual_seed(args.seed)  # the initial weights too: one seed, one result
    model = _model(args, data.num_classes)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    hist = fit(model, data.tensors("train"), data.tensors("val"), cfg, desc=f"train {args.model}",
               progress=_progress(args))
    test_acc = evaluate(model, data.tensors("test"))
    save_weights(model, args.output, metadata={"model": args.model, "data": _data_record(args.data)})
    out = {
        "command": "train", "model": args.model, "data": str(args.data), "split_sizes": sizes,
        "output": str(args.output), "epochs": args.epochs,
        "best_epoch": hist.best_epoch + 1 if args.epochs else None,
        "val_accuracy": hist.best_val_accuracy, "test_accuracy": test_acc, "seconds": hist.seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if not args.json:
        run.console.print(Text(_describe_data(str(args.data), sizes)))
        what = (f"trained {args.model} in {hist.seconds:.1f} s: validation {_pct(out['val_accuracy'])} "
                f"(epoch {out['best_epoch']})" if args.epochs else f"saved the untrained {args.model} (--epochs 0)")
        run.console.print(Text(f"{what}, test {_pct(test_acc)} → {args.output}"))
    return out


def _data_record(data: str) -> str:
    """How a file records its data set: a name as given, a path made absolute (usable from elsewhere)."""
    from deepshrink.data.sources import source_names

    return data if data in source_names() else str(Path(data).expanduser().resolve())


def _data_and_model(run: Run) -> tuple[Any, str, Any]:
    """The data (a pretrained network's own by default, else the benchmark data; its split sizes
    printed), the objective and the model of a compress or analyze command."""
    args = run.args
    pretrained = _pretrained(args.model)
    if args.data is None:  # the pretrained network's own data, else the default benchmark data
        args.data = pretrained.data if pretrained is not None else DEFAULT_DATA
    data = _load_data(args, args.data, args.val_size, args.seed)
    if not args.json:
        run.console.print(Text(_describe_data(str(args.data), data.split_sizes())))
    objective = args.objective or (pretrained.objective if pretrained is not None else "classify")
    return data, objective, _model(args, getattr(data, "num_classes", None))


def cmd_compress(run: Run) -> dict[str, Any]:
    from deepshrink.analysis.budget import CONFIDENCE, Target, auto_compress, knobs
    from deepshrink.pipeline import compress
    from deepshrink.recipes import load_recipe
    from deepshrink.util.atomic import write_bytes_atomic

    args = run.args
    check_target(args.output)  # before any work
    if args.report is not None:
        _check_report_target(args.report, args.output)
    recipe = load_recipe(args.recipe)
    if args.coder:
        recipe = recipe.with_coder(args.coder)
    target = None
    given = [f for f in ("target_bytes", "target_ratio", "max_drop") if getattr(args, f) is not None]
    if len(given) > 1:
        raise ConfigError("give one of --target-bytes, --target-ratio and --max-drop, not "
                          + " and ".join("--" + g.replace("_", "-") for g in given))
    if given:
        if args.confidence is not None and args.max_drop is None:
            raise ConfigError("--confidence applies to --max-drop only")
        target = Target(bytes=args.target_bytes, ratio=args.target_ratio, max_drop=args.max_drop,
                        confidence=CONFIDENCE if args.confidence is None else args.confidence)
        knobs(recipe)  # a recipe with nothing to vary is refused before any work
        if args.write_recipe is not None:
            check_target(args.write_recipe)
    data, objective, model = _data_and_model(run)
    start = time.perf_counter()
    budget = None
    if target is not None:
        budget = auto_compress(model, data, recipe, target, objective=objective, progress=_progress(args),
                               log=None if args.json else lambda msg: run.console.print(Text(f"budget: {msg}")))
        result = budget.result
        recipe_path = args.write_recipe or args.output.with_suffix(".recipe.toml")
        write_bytes_atomic(recipe_path, budget.recipe.to_toml().encode())
    else:
        result = compress(model, data, recipe, progress=_progress(args), measure=args.measure, objective=objective,
                          meta={"model": args.model, "data": _data_record(args.data), "seed": args.seed})
    write_bytes_atomic(args.output, result.data)
    out = {"command": "compress", "output": str(args.output), "data": str(args.data),
           "seconds": time.perf_counter() - start, **result.to_dict()}  # with the split sizes
    if budget is not None:
        out["budget"] = {**budget.to_dict(), "recipe_file": str(recipe_path)}
    if args.report is not None:
        from deepshrink.report import run_page, write_page

        out["report"] = {"path": str(args.report),
                         "bytes": write_page(args.report, run_page(out, result.data, source=str(args.output)))}
    if not args.json:
        print_compress(run.console, out)
        if budget is not None:
            b = out["budget"]
            run.console.print(Text(
                f"budget: {budget.target.describe()}; drop on the confirm half of validation {b['check_drop']:.2f} ± "
                f"{b['check_se']:.2f} points ({b['check_samples']:,} samples the search did not use), "
                f"{len(b['runs'])} compress runs; "
                f"recipe → {recipe_path}"))
        if "report" in out:
            run.console.print(Text(f"report ({_kb(out['report']['bytes'])}) → {args.report}"))
    return out


def _check_report_target(report: Path, output: Path) -> None:
    check_target(report)
    if report.resolve() == output.resolve():
        raise ConfigError(f"the report {str(report)!r} would overwrite the output file; give it another name")


MAX_RUN_JSON = 64 << 20
"""Bytes of a ``report --run`` file read at most (a compress run's JSON is a few KB)."""


def _read_run(path: Path) -> dict[str, Any]:
    """The ``compress --json`` output in ``path``: a JSON object with the run's stages."""
    where = f"--run {str(path)!r}"
    if path.stat().st_size > MAX_RUN_JSON:
        raise ConfigError(f"{where} is larger than {MAX_RUN_JSON >> 20} MB: not the output of compress --json")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"{where} is not JSON ({str(exc)[:200]}); expected the output of compress --json") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("stages"), list):
        if isinstance(doc, dict) and "error" in doc:
            raise ConfigError(f"{where} is the output of a command that failed: {str(doc['error'])[:200]}")
        raise ConfigError(f"{where} is JSON but not the output of compress --json (an object with \"stages\")")
    return doc


def cmd_report(run: Run) -> dict[str, Any]:
    from deepshrink.report import run_page, write_page

    args = run.args
    check_target(args.output)  # before any work
    if not args.file.exists():
        raise FileNotFoundError(2, "no such file", str(args.file))
    if args.file.resolve() == args.output.resolve():
        raise ConfigError(f"the report {str(args.output)!r} would overwrite the .dsz file; give it another name")
    result = _read_run(args.run) if args.run is not None else None
    evaluation = None
    if args.data is not None:  # score the file as `deepshrink eval` does
        sub = Run(argparse.Namespace(**{**vars(args), "json": True, "split": "test", "runtime": "dense",
                                        "prefer": "speed", "val_size": None, "seed": None}), run.console)
        evaluation = cmd_eval(sub)
        run.warnings += [w for w in sub.warnings if w not in run.warnings]
    size = write_page(args.output, run_page(result, args.file, evaluation=evaluation, source=str(args.file)))
    out = {"command": "report", "file": str(args.file), "output": str(args.output), "bytes": size,
           "file_bytes": args.file.stat().st_size, "run": None if args.run is None else str(args.run),
           "evaluated": evaluation is not None}
    if evaluation is not None:
        out["score"] = evaluation["score"]
        out["metric"] = evaluation["metric"]
    if not args.json:
        what = "the file" + (" and its compress run" if result is not None else "") + (
            f", scored on {evaluation['samples']:,} test samples of {evaluation['data']}" if evaluation else "")
        run.console.print(Text(f"report of {what} ({_kb(size)}) → {args.output}"))
    return out


def cmd_analyze(run: Run) -> dict[str, Any]:
    from deepshrink.analysis.analyze import analyze

    args = run.args
    check_target(args.output)  # before any work
    html_path = args.html or args.output.with_suffix(".html")
    check_target(html_path)
    techniques = [t.strip() for t in args.techniques.split(",") if t.strip()]
    data, objective, model = _data_and_model(run)
    result = analyze(model, data, objective=objective, techniques=techniques, coder=args.coder,
                     fisher_samples=args.fisher_samples, val_limit=args.val_limit, progress=_progress(args),
                     name=args.model, data_name=str(args.data))
    result.write_json(args.output)
    result.write_html(html_path)
    doc = result.to_dict()
    out = {"command": "analyze", "output": str(args.output), "html": str(html_path), "seconds": doc["seconds"],
           "seconds_by_part": doc["seconds_by_part"], "baseline_val": doc["baseline"]["val"],
           "layers": len(doc["layers"]), "curves": len(doc["curves"])}
    if not args.json:
        print_analyze(run.console, doc)
        run.console.print(Text(f"analysis of {len(doc['layers'])} layers in {doc['seconds']:.0f} s → "
                               f"{args.output} and {html_path}"))
    return out


def print_analyze(console: Console, doc: dict[str, Any]) -> None:
    """Per layer: the validation drop at a few settings of each technique, with the bytes."""
    base = doc["baseline"]["val"]
    rows = []
    for c in doc["curves"]:
        cells = [f"{p['value']:g}: {100 * (base - p['val']):+.1f} pt / {_kb(p['bytes'])}" for p in c["points"]]
        rows.append((c["layer"], c["technique"], c["setting"], "; ".join(cells[::max(1, len(cells) // 4)])))
    print_table(console, f"sensitivity (validation drop without retraining; baseline {_pct(base)})",
                ("layer", "technique", "setting", "drop / bytes at a few settings"), rows,
                left=("layer", "technique", "setting", "drop / bytes at a few settings"))


def print_compress(console: Console, out: dict[str, Any]) -> None:
    print_table(console, f"deepshrink compress: recipe {out['recipe']}, coder {out['coder']}",
                ("stage", "val acc", "test acc", "bytes", "ratio", "time"),
                [(s["stage"], _pct(s["val_accuracy"]), _pct(s["test_accuracy"]), _kb(s["file_bytes"]),
                  f"{s['ratio']:.1f}×", f"{s['seconds']:.1f} s") for s in out["stages"]], left=("stage",))
    for s in out["stages"]:
        if s["stage"] != "lowrank":
            continue
        d = s["detail"]
        print_table(
            console,
            f"low rank: val accuracy {_pct(d['val_accuracy_before_finetune'])} after factorising → "
            f"{_pct(d['val_accuracy_after_finetune'])} after fine-tuning",
            ("layer", "method", "rank", "layers", "weights", "non-zero"),
            [(name, r["method"] + (f" ({r['importance']})" if "importance" in r else ""), str(r["rank"]),
              " → ".join("×".join(map(str, sh)) for sh in r["shapes"]),
              f"{r['weights_before']:,} → {r['weights_after']:,}", f"{r['nonzero_after']:,}")
             for name, r in d["layers"].items()],
            left=("layer", "method", "layers"),
        )
    print_table(console, "per layer", ("layer", "shape", "kept", "bits", "encoding", "index bytes", "weight bytes", "ratio"),
                [(r["name"], "×".join(map(str, r["shape"])), _pct(r["kept"]), str(r["bits"]), r["encoding"],
                  _kb(r["index_bytes"]), _kb(r["weight_bytes"]), f"{r['ratio']:.1f}×") for r in out["layers"]],
                left=("layer", "encoding"))
    if out["streams"]:
        print_table(
            console, "coded streams: size next to the empirical (order-0) entropy",
            ("tensor", "stream", "symbols", "alphabet", "entropy", "coded", "overhead"),
            [(r["tensor"], r["stream"], f"{r['symbols']:,}", str(r["alphabet"]), _kb(r["entropy_bytes"]),
              _kb(r["coded_bytes"]),
              f"{100 * (r['coded_bytes'] / r['entropy_bytes'] - 1):+.1f}%" if r["entropy_bytes"] > 0 else "-")
             for r in out["streams"]],
            left=("tensor", "stream"),
        )
    console.print(Text(
        f"dense {_kb(out['dense_bytes'])} → file {_kb(out['file_bytes'])} ({out['ratio']:.1f}×); "
        f"test accuracy {_pct(out['baseline_test_accuracy'])} → {_pct(out['final_test_accuracy'])} "
        f"(measured from the file; {out['accuracy_drop_points']:+.2f} points drop) → {out['output']}"
    ))


def _recorded(meta: dict[str, Any], key: str, kind: type) -> Any:
    """A value the file's meta records, or None when absent or of the wrong type (untrusted input)."""
    v = meta.get(key)
    return v if isinstance(v, kind) and not isinstance(v, bool) else None


def _eval_data(run: Run, model) -> tuple[str, str]:
    """The data set to evaluate on: --data, else the one the file records if it is available here.
    Returns it and where it came from."""
    from deepshrink.data.sources import source_names

    if run.args.data is not None:
        return run.args.data, "--data"
    recorded = _recorded(model.meta, "data", str)
    if recorded is None:
        raise DataError(f"{str(run.args.file)!r} does not record the data set it was compressed on; "
                        "pass --data (a name such as fashion-mnist, a folder of IDX files or an .npz file)")
    try:
        available = recorded in source_names() or Path(recorded).exists()
    except (OSError, ValueError):  # e.g. a NUL byte in a hostile file's record
        available = False
    if not available:
        raise DataError(f"{str(run.args.file)!r} was compressed on {recorded!r}, which does not exist here; "
                        "pass --data with that data set")
    return recorded, "recorded in the file"


def _check_data_fits(run: Run, model, data) -> None:
    """Refuse data whose samples or classes do not fit the file; warn when its pixel statistics
    differ from the file's (probably another data set)."""
    from deepshrink.models import num_classes

    want, got = model.input_spec, data.input_spec
    if want is None or got is None:  # token ids and other inputs used as they are
        if (want is None) != (got is None):
            raise DataError(f"the data {data.name!r} gives {'token ids' if got is None else 'images'}; the file "
                            f"expects {'images' if want is not None else 'its inputs ' + ', '.join(model.graph.input_names)}")
        return
    if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
        raise DataError(f"the data's samples are {got.dtype} of shape {list(got.shape)}; the file expects "
                        f"{want.dtype} of shape {list(want.shape)}")
    classes = num_classes(model)
    data_classes = getattr(data, "num_classes", None)
    if classes is not None and data_classes is not None and classes != data_classes:
        raise DataError(f"the data has {data_classes} classes (labels 0..{data_classes - 1}); "
                        f"the network in the file outputs {classes} class scores")
    if len(got.mean) == len(want.mean) and len(got.std) == len(want.std) and any(
        abs(gm - wm) > 0.1 * ws or abs(math.log(gs / ws)) > 0.1
        for gm, wm, gs, ws in zip(got.mean, want.mean, got.std, want.std)
    ):
        run.warn(f"the data's pixel statistics (mean {list(got.mean)}, std {list(got.std)}) differ from those the "
                 f"file was compressed with (mean {list(want.mean)}, std {list(want.std)}): is this the data set "
                 "the model was trained on?")


def _file_objective(model) -> str:
    """The objective a file was compressed for (``classify`` when it records none, as older files)."""
    from deepshrink.train import OBJECTIVES

    objective = _recorded(model.meta, "objective", str) or "classify"
    if objective not in OBJECTIVES:
        raise DataError(f"the file records the objective {objective[:60]!r}, which this deepshrink does not know "
                        f"(known: {', '.join(OBJECTIVES)})")
    return objective


def _reference(run: Run, model):
    """The dense network a file is judged against (objectives that compare with it): the zoo's
    pretrained network the file was compressed from."""
    from deepshrink.models import create

    name = _recorded(model.meta, "model", str)
    if name is None or _pretrained(name) is None:
        raise DataError(f"{str(run.args.file)!r} is scored against the dense network it was compressed from, and "
                        f"eval can rebuild that only for the zoo's pretrained networks (`deepshrink models`); the file "
                        f"records the model {name!r}")
    return create(name)


def _eval_split(model, data, split: str):
    """The split's inputs preprocessed as the file says (its recorded input spec), and labels."""
    import torch

    from deepshrink.data import Dataset, Split

    if isinstance(data, Dataset):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        return Split.of(model.input_spec.apply(x), torch.as_tensor(y, dtype=torch.long))
    if model.input_spec is not None and hasattr(data, "raw"):  # raw images: the file's preprocessing
        return Split((model.input_spec.apply(torch.from_numpy(data.raw(split))),))
    return data.split(split)


def cmd_eval(run: Run) -> dict[str, Any]:
    from deepshrink.runtime import load
    from deepshrink.train import evaluate_metrics, get_objective, outputs

    args = run.args
    if args.prefer != "speed" and args.runtime != "compressed":
        raise ConfigError("--prefer chooses how --runtime compressed picks its kernels; add --runtime compressed")
    model = load(args.file, mode=args.runtime, **({"prefer": args.prefer} if args.runtime == "compressed" else {}))
    objective = get_objective(_file_objective(model))
    data_name, source = _eval_data(run, model)
    seed = args.seed if args.seed is not None else _recorded(model.meta, "seed", int) or 0
    # the test split does not depend on the validation split: skip it so small training sets work
    val_size = args.val_size if args.val_size is not None else (0 if args.split == "test" else None)
    data = _load_data(args, data_name, val_size, seed)
    _check_data_fits(run, model, data)
    split = _eval_split(model, data, args.split)
    if len(split) == 0:
        raise ConfigError(f"the {args.split} split is empty (--val-size 0 means no validation split)")
    start = time.perf_counter()
    teacher = outputs(_reference(run, model), split) if objective.wants_teacher() else None
    metrics = evaluate_metrics(model, split, objective, teacher)
    score = metrics[objective.primary]
    out = {"command": "eval", "file": str(args.file), "data": data_name, "data_source": source,
           "split": args.split, "samples": len(split), "objective": objective.name, "metric": objective.primary,
           "score": score, "metrics": metrics, "seconds": time.perf_counter() - start, "file_bytes": model.file_bytes}
    if objective.name == "classify":
        out["accuracy"] = score
    out["runtime"] = model.mode
    if model.mode == "compressed":
        out["kernels"] = model.kernels
        out["kernel_select_seconds"] = model.net.select_seconds
    if model.mode == "engine":
        out["engine"] = model.net.report()
    if not args.json:
        scores = ", ".join(f"{k.replace('_', ' ')} {_score(k, v)}" for k, v in metrics.items())
        against = "" if teacher is None else f", against the dense {model.meta.get('model')}"
        run.console.print(Text(f"{args.file}: {scores} on {len(split):,} {args.split} samples of {data_name} "
                               f"({source}{against}; input preprocessing from the file)"))
        if model.mode == "compressed":
            chosen = ", ".join(k["layer"] + " " + (k["kernel_batch1"] if k["kernel_batch1"] == k["kernel_batchN"]
                                                   else f"{k['kernel_batch1']}/{k['kernel_batchN']}")
                               for k in model.kernels)
            run.console.print(Text(f"compressed runtime, kernels (batch 1/large batch): {chosen or 'no layers'}"))
        if model.mode == "engine":
            e = out["engine"]
            flash = "n/a" if e["flash_bytes"] is None else _kb(e["flash_bytes"])
            run.console.print(Text(f"C engine: flash {flash}, RAM arena {_kb(e['arena_bytes'])}"))
    return out


def cmd_info(run: Run) -> dict[str, Any]:
    from deepshrink.inspect import info

    args = run.args
    out = {"command": "info", "file": str(args.file),
           **info(args.file, decode=args.check_streams, digest=args.sha256, engine=True if args.engine else None)}
    if args.json:
        return out
    c = run.console
    c.print(Text(f"{args.file}: {out['producer']}, format v{out['format_version']}, {_kb(out['file_bytes'])} "
                 f"(header {_kb(out['header_bytes'])}), dense {_kb(out['dense_bytes'])}, ratio {out['ratio']:.1f}×"))
    c.print(Text("checksums, header and descriptors verified; coded streams "
                 + ("decoded and checked" if out["streams_checked"] else "not decoded (--check-streams decodes them)")))
    if "sha256" in out:
        c.print(Text(f"sha256 {out['sha256']}"))
    spec = out["input"]
    if spec is not None:
        inputs = (f"input: shape {spec['shape']} {spec['dtype']}, × {spec['scale']:.6g}, mean {spec['mean']}, "
                  f"std {spec['std']}")
    else:  # several inputs, or token ids: used as they are
        inputs = "inputs: " + ", ".join(f"{i['name']} {i['dtype']} {i['shape']}" for i in out["inputs"])
    outputs = ", ".join(f"{o['name']} {o['dtype']} {o['shape']}" for o in out.get("outputs", []))
    c.print(Text(f"{inputs}; outputs: {outputs}; {out['macs_per_sample']:,} MACs per sample"))
    e = out.get("engine")
    if e is not None:  # deepshrink export --format c
        if not e["supported"]:
            c.print(Text(f"C engine: not available, {len(e['problems'])} problem(s): {'; '.join(e['problems'][:3])}"))
        elif "error" in e or "note" in e:
            c.print(Text(f"C engine (export --format c): RAM arena {_kb(e['arena_bytes'])}; {e.get('error') or e['note']}"))
        else:
            c.print(Text(_engine_line({**e, "dsz_bytes": out["file_bytes"]}, "C engine (export --format c)")
                         + ("" if args.engine else " (--engine compiles it to measure flash)")))
    print_table(c, "graph", ("node", "op", "inputs", "params"),
                [(n["name"], n["op"], ", ".join(n["inputs"]),
                  ", ".join(f"{r} {'×'.join(map(str, s))}" for r, s in n["params"].items())) for n in out["graph"]],
                left=("node", "op", "inputs", "params"))
    print_table(c, "tensors", ("tensor", "shape", "encoding", "coder", "codebook", "bytes", "dense", "ratio"),
                [(x["name"], "×".join(map(str, x["shape"])), f"{x['encoding']}/{x['layout']}", x["coder"],
                  str(x["codebook"]), _kb(x["bytes"]), _kb(x["dense_bytes"]), f"{x['ratio']:.1f}×" if x["ratio"] else "-")
                 for x in out["tensors"]],
                left=("tensor", "shape", "encoding", "coder"))
    return out


def cmd_export(run: Run) -> dict[str, Any]:
    from deepshrink.export import export

    args = run.args
    if args.format != "c":  # the C engine is a folder
        check_target(args.output)  # before any work
    out = {"command": "export", "file": str(args.file),
           **export(args.file, args.output, args.format, with_preprocessing=args.with_preprocessing,
                    compact=args.compact)}
    if not args.json and out["format"] == "c":
        run.console.print(Text(_engine_line(out, f"exported {args.file} → {out['path']}/ (C engine: "
                                                 f"{', '.join(out['files'])})")))
        return out
    if not args.json:
        extra = ""
        if out["format"] == "onnx":
            extra = (f"; {out['ratio_to_dsz']:.2f}× the .dsz ({_kb(out['dsz_bytes'])}), compact" if out["compact"] else "")
            takes = ("raw" if out["preprocessing"] else "preprocessed float32") + " input"
            if len(out["inputs"]) > 1 or out["inputs"][0]["dtype"] != "float32":
                takes = ", ".join(f"{i['name']} ({i['dtype']})" for i in out["inputs"])
            extra += (f"; takes {takes}"
                     f"; onnxruntime vs PyTorch: max |diff| {out['max_abs_diff']:.2e}, "
                     f"argmax agreement {_pct(out['argmax_agreement'])}")
        run.console.print(Text(f"exported {args.file} → {out['path']} ({out['format']}, {_kb(out['bytes'])}){extra}"))
    return out


def _engine_line(e: dict[str, Any], head: str) -> str:
    """One line on the C engine: flash (and its ratio to the .dsz), RAM arena, weights, the check."""
    flash = "flash not measured" if e.get("flash_bytes") is None else f"flash {_kb(e['flash_bytes'])}"
    if e.get("flash_bytes") is not None and e.get("dsz_bytes"):
        flash += f" ({e['flash_bytes'] / e['dsz_bytes']:.2f}× the .dsz)"
    line = f"{head}; {flash}, RAM arena {_kb(e['arena_bytes'])}, const weights {_kb(e['weight_bytes'])}"
    if "checked" in e:
        line += (f"; compiled and checked against PyTorch: max |diff| {e['max_abs_diff']:.2e}, argmax agreement "
                 f"{_pct(e['argmax_agreement'])}" if e["checked"] else "; not checked (no C compiler)")
    return line


def recipe_list() -> list[dict[str, Any]]:
    """The built-in recipes: name, one-line description and stages."""
    from deepshrink.recipes import builtin_recipes, load_recipe

    out = []
    for name in builtin_recipes():
        r = load_recipe(name)
        out.append({"name": name, "description": r.description or name, "stages": [s.kind for s in r.stages]})
    return out


def model_list() -> list[dict[str, Any]]:
    """The zoo: name, summary, and for pretrained networks the package that ships the weights,
    their data source and objective."""
    from deepshrink.models import ZOO

    out = []
    for name, entry in ZOO.items():
        p = entry.pretrained
        out.append({"name": name, "summary": entry.summary, "pretrained": p is not None,
                    "weights_package": p.weights.distribution if p else None, "data": p.data if p else None,
                    "objective": p.objective if p else None,
                    "inputs": [{"name": i.name, "dtype": i.dtype, "shape": list(i.shape)} for i in p.inputs]
                    if p else None})
    return out


def cmd_models(run: Run) -> dict[str, Any]:
    out = {"command": "models", "models": model_list()}
    if not run.args.json:
        print_table(run.console, "the zoo (--model NAME); pretrained networks need no --weights",
                    ("model", "weights from", "data", "objective", "summary"),
                    [(m["name"], m["weights_package"] or "train it", m["data"] or "any", m["objective"] or "classify",
                      m["summary"]) for m in out["models"]],
                    left=("model", "weights from", "data", "objective", "summary"), wrap=("summary",))
    return out


def cmd_recipes(run: Run) -> dict[str, Any]:
    out = {"command": "recipes", "recipes": recipe_list()}
    if not run.args.json:
        print_table(run.console, "built-in recipes (deepshrink compress --recipe NAME)", ("recipe", "stages", "description"),
                    [(r["name"], " → ".join(r["stages"]), r["description"]) for r in out["recipes"]],
                    left=("recipe", "stages", "description"), wrap=("description",))
    return out


# ----------------------------------------------------------------------------------------------
# the parser


def _add_data(p: argparse.ArgumentParser, *, for_eval: bool = False, for_compress: bool = False) -> None:
    from deepshrink.data.dataset import DEFAULT_VAL_SIZE

    default_val = str(DEFAULT_VAL_SIZE).replace("%", "%%")  # argparse %-formats help texts
    if for_eval:
        p.add_argument("--data", default=None,
                       help="'fashion-mnist', 'mnist', 'mnist-5k', 'image-crops', 'debian-sentences', a folder of IDX files, or an "
                            ".npz file (default: the data "
                            "set recorded in the file, if it is available here; refused when its classes or "
                            "sample shape do not fit the file)")
        p.add_argument("--val-size", type=_val_size, default=None,
                       help="validation samples carved from the training data, as for compress: a count, a "
                            "fraction < 1, or 0 for none (default: none for --split test, else the library "
                            f"default: {default_val})")
        p.add_argument("--seed", type=_int_at_least(0), default=None,
                       help="seed of the validation split (default: the seed recorded in the file, else 0)")
    else:
        p.add_argument("--data", default=None if for_compress else DEFAULT_DATA,
                       help="'fashion-mnist', 'mnist', 'mnist-5k', 'image-crops', 'debian-sentences', a folder of IDX files, or an "
                            ".npz file"
                            + (f" (default: a pretrained network's own data, else {DEFAULT_DATA})" if for_compress
                               else ""))
        p.add_argument("--val-size", type=_val_size, default=None,
                       help="validation samples carved from the training data: a count, a fraction < 1, or 0 "
                            "for none (then the last epoch is kept) "
                            f"(default: {default_val})")
        p.add_argument("--seed", type=_int_at_least(0), default=0,
                       help="seed of the validation split, the initial weights and the batch order")
    p.add_argument("--limit", type=_int_at_least(1, " (leave --limit out to use all the data)"), default=None,
                   help="use only this many training samples, and a fifth of that for test and for validation "
                        "(unless --val-size is given: a count, or a fraction of the limited set), for quick runs "
                        "(default: all the data)")


def _common(p: argparse.ArgumentParser) -> None:
    from deepshrink.util.threads import DEFAULT_THREADS, THREADS_ENV

    p.add_argument("--json", action="store_true", help="print one JSON object on stdout, also on errors")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--threads", type=_int_at_least(1), default=None,
                   help=f"CPU threads for PyTorch; results agree to float rounding whatever the count "
                        f"(default: ${THREADS_ENV}, else {DEFAULT_THREADS}, fastest for small models)")


def _output(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("-o", "--output", required=True, type=Path,
                   help=f"{what} to write (missing folders are created; an existing file is replaced "
                        "atomically)")


def objective_names() -> list[str]:
    from deepshrink.train import OBJECTIVES

    return list(OBJECTIVES)


def build_parser() -> argparse.ArgumentParser:
    from deepshrink.analysis.analyze import DEFAULT_TECHNIQUES, FISHER_SAMPLES

    parser = _Parser(prog="deepshrink", description=__doc__.split("\n\n")[0], formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"deepshrink {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="train, analyze, compress, eval, info, export, report, recipes or models")

    def command(name: str, func, help: str, epilog: str | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, epilog=epilog, formatter_class=_Formatter)
        p.set_defaults(func=func)
        return p

    p = command("train", cmd_train, "train a model and save its weights as safetensors")
    p.add_argument("--model", required=True, help="zoo name (lenet-300-100, lenet-5) or package.module:factory "
                                                  "(importable from the working directory or PYTHONPATH)")
    _add_data(p)
    p.add_argument("--epochs", type=_int_at_least(0), default=20,
                   help="training epochs; 0 saves the untrained initial weights")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate")
    p.add_argument("--batch-size", type=_int_at_least(1), default=128, help="samples per training step")
    _output(p, "safetensors weights file")
    _common(p)

    recipes = recipe_list()
    width = max(len(r["name"]) for r in recipes)
    epilog = "built-in recipes (see also `deepshrink recipes`):\n" + "\n".join(
        f"  {r['name']:<{width}}  {r['description']}" for r in recipes)
    p = command("compress", cmd_compress, "compress a trained model into a .dsz file", epilog)
    p.add_argument("--model", required=True,
                   help="the model the weights belong to: zoo name (see `deepshrink models`) or package.module:factory")
    p.add_argument("--weights", default=None, type=Path,
                   help="safetensors weights of the trained model (default: none, which only the zoo's pretrained "
                        "networks allow: they come with their own)")
    _add_data(p, for_compress=True)
    p.add_argument("--recipe", default="deep-compression",
                   help=f"built-in recipe ({', '.join(r['name'] for r in recipes)}) or a TOML file")
    p.add_argument("--objective", choices=objective_names(), default=None,
                   help="what retraining follows and the scores measure: classify (labels, accuracy), match-logits "
                        "(the dense network's class scores: top-1 agreement) or match-embeddings (its embeddings: "
                        "cosine) (default: a pretrained network's own, else classify)")
    p.add_argument("--coder", choices=["huffman", "ans", "fixed", "context"], default=None,
                   help="entropy coder for every coded stream (default: the recipe's)")
    p.add_argument("--measure", choices=["estimate", "exact"], default="estimate",
                   help="accuracy after each stage: on the in-memory model (estimate, default) or on the network "
                        "decoded from that stage's bytes (exact, slower); the final accuracy is always the file's")
    p.add_argument("--target-bytes", type=_int_at_least(1), default=None,
                   help="automatic budget: the most accurate file of at most this many bytes; the recipe's prune, "
                        "share and quantize settings are chosen per layer from measured sensitivity (default: none, "
                        "the recipe's own settings)")
    p.add_argument("--target-ratio", type=_positive_float, default=None,
                   help="automatic budget: the most accurate file at least this many times smaller than the dense model "
                        "(default: none)")
    p.add_argument("--max-drop", type=_non_negative_float, default=None,
                   help="automatic budget: the smallest file within this many points of the dense model's "
                        "validation score (several compress runs; default: none)")
    p.add_argument("--confidence", type=_non_negative_float, default=None,
                   help="with --max-drop: one-sided confidence that the file's true drop is within it; a run "
                        "passes when its validation drop plus z(C) paired standard errors does, on the half of "
                        "validation that decides the search and then on the other half, which only confirms the "
                        "chosen file (0.5: the drop alone; default: deepshrink.analysis.budget.CONFIDENCE)")
    p.add_argument("--write-recipe", type=Path, default=None,
                   help="with a target: where to write the recipe the budget chose (default: the output with "
                        "suffix .recipe.toml)")
    _output(p, ".dsz file")
    p.add_argument("--report", type=Path, default=None,
                   help="also write a self-contained HTML report of the run to this file, as `deepshrink report` "
                        "does (default: none)")
    _common(p)

    p = command("analyze", cmd_analyze, "measure each layer's sensitivity to pruning, sharing, quantisation and "
                                         "low rank (with real coded bytes), its robustness and its singular values; "
                                         "write JSON and a self-contained HTML report")
    p.add_argument("--model", required=True,
                   help="zoo name (see `deepshrink models`) or package.module:factory")
    p.add_argument("--weights", default=None, type=Path,
                   help="safetensors weights of the trained model (default: none, which only the zoo's pretrained "
                        "networks allow)")
    _add_data(p, for_compress=True)
    p.add_argument("--objective", choices=objective_names(), default=None,
                   help="what the scores measure (default: a pretrained network's own, else classify)")
    p.add_argument("--techniques", default=",".join(DEFAULT_TECHNIQUES),
                   help=f"comma-separated techniques to measure ({', '.join(DEFAULT_TECHNIQUES)})")
    p.add_argument("--coder", choices=["huffman", "ans", "fixed", "context"], default="ans",
                   help="entropy coder the layers' bytes are measured with")
    p.add_argument("--fisher-samples", type=_int_at_least(0), default=FISHER_SAMPLES,
                   help="training samples of the Fisher information (0 skips it)")
    p.add_argument("--val-limit", type=_int_at_least(1), default=None,
                   help="score on the first N validation samples only (faster; default: all)")
    p.add_argument("--html", type=Path, default=None,
                   help="the HTML report to write (default: the output with suffix .html)")
    _output(p, "JSON analysis")
    _common(p)

    p = command("eval", cmd_eval, "score a .dsz file: accuracy, or fidelity to the dense pretrained network it was "
                                  "compressed from (the objective the file records)")
    p.add_argument("file", type=Path, help="the .dsz file")
    _add_data(p, for_eval=True)
    p.add_argument("--split", choices=["test", "val", "train"], default="test", help="which split to score")
    p.add_argument("--runtime", choices=["dense", "compressed", "engine"], default="dense",
                   help="run the layers from dense weights (default), from the compressed weights, each with the "
                        "kernel measured fastest at load (listed under \"kernels\" with --json), or through the C "
                        "engine of export --format c, compiled here (needs a C compiler)")
    p.add_argument("--prefer", choices=["speed", "memory"], default="speed",
                   help="with --runtime compressed: per layer the fastest kernel (default), or the one keeping the "
                        "fewest bytes of weights (the packed weights of the C kernels when a compiler is present)")
    _common(p)

    p = command("info", cmd_info, "structure and per-layer / per-section bytes of a .dsz file")
    p.add_argument("file", type=Path, help="the .dsz file")
    p.add_argument("--sha256", action="store_true",
                   help="also print the file's SHA-256, to pin it (the file's CRCs detect accidents, not tampering)")
    p.add_argument("--check-streams", action="store_true",
                   help="also decode every coded stream and check its values, as loading the file does")
    p.add_argument("--engine", action="store_true",
                   help="also compile the C engine (export --format c) to measure its flash bytes (text + data)")
    _common(p)

    p = command("export", cmd_export, "export a .dsz file to ONNX, dense safetensors or a C engine")
    p.add_argument("file", type=Path, help="the .dsz file")
    _output(p, ".onnx or .safetensors file (a folder with --format c)")
    p.add_argument("--format", choices=["onnx", "safetensors", "c"], default=None,
                   help="output format (default: from the output file's extension); c: a dependency-free C99 engine "
                        "running from the compressed weights (model.c, model.h, main.c, Makefile), compiled and "
                        "checked against PyTorch when a C compiler is present")
    p.add_argument("--with-preprocessing", action="store_true",
                   help="ONNX only: put the input scaling and normalisation in the graph, so the model takes raw "
                        "input of the file's dtype (e.g. uint8 images); the input spec is always in the metadata")
    p.add_argument("--compact", action="store_true",
                   help="ONNX only: keep the stored form (byte codebook indices with Gather, pruned weights as byte "
                        "gaps and ScatterElements) instead of dense float32 weights: a few times the .dsz, not 40x; "
                        "onnxruntime expands the weights when it loads the model")
    _common(p)

    p = command("report", cmd_report, "write a self-contained HTML report of a .dsz file: bytes per tensor, coded "
                                      "streams against their entropy, and with --run the compress run's stages")
    p.add_argument("file", type=Path, help="the .dsz file")
    _output(p, ".html report")
    p.add_argument("--run", type=Path, default=None,
                   help="the output of `compress --json` that made the file, for its stages and scores (default: "
                        "the page is built from the file alone)")
    p.add_argument("--data", default=None,
                   help="also score the file on this data set's test split, as `deepshrink eval` does (a folder "
                        "of IDX files, an .npz file or a name such as fashion-mnist) (default: no scoring)")
    p.add_argument("--limit", type=_int_at_least(1), default=None,
                   help="with --data: score on the cut-down test split `deepshrink eval --limit` uses (default: "
                        "the whole test split)")
    _common(p)

    p = command("recipes", cmd_recipes, "list the built-in compression recipes")
    _common(p)

    p = command("models", cmd_models, "list the zoo's networks: architectures to train and pretrained networks")
    _common(p)
    return parser


# ----------------------------------------------------------------------------------------------
# running a command


class Terminated(BaseException):
    """SIGTERM (or SIGHUP) arrived: unwind like Ctrl-C so temporaries are removed."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into an exception while a command runs (main thread only)."""
    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    saved = {}
    try:
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                saved[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: keep the default handlers
        pass
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    try:
        return _main(argv)
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at interpreter exit
        return 128 + signal.SIGPIPE if hasattr(signal, "SIGPIPE") else 1


def _main(argv: list[str] | None) -> int:
    from deepshrink.util.threads import set_threads

    argv = sys.argv[1:] if argv is None else list(argv)
    as_json = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        command = next((a for a in argv if not a.startswith("-")), None)
        if as_json:
            _emit({"command": command, "error": str(exc), "type": "UsageError", "threads": None, "warnings": []})
        else:
            sys.stderr.write(exc.text)
        return 2
    run = Run(args, Console(highlight=False, soft_wrap=True))  # soft wrap: paths and names stay whole
    try:
        with _signals_unwind(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                run.threads = set_threads(args.threads)
                out = args.func(run)
            finally:  # the library's warnings (e.g. about the validation split) reach the user
                for w in caught:
                    if issubclass(w.category, UserWarning) and str(w.message) not in run.warnings:
                        run.warnings.append(str(w.message))
    except BrokenPipeError:
        raise
    except (DeepshrinkError, OSError) as exc:  # bad input: a typed message, exit status 2
        return _fail(run, exc, 2)
    except KeyboardInterrupt:
        return _fail(run, "interrupted", 130)
    except Terminated as exc:
        return _fail(run, exc, 128 + exc.signum)
    except Exception as exc:  # a bug: one line (one JSON object with --json), no traceback
        if os.environ.get("DEEPSHRINK_DEBUG"):
            raise
        return _fail(run, f"unexpected {type(exc).__name__}: {exc} ({BUG})", 1, kind=type(exc).__name__)
    _print_warnings(run)
    if args.json:
        _emit({**out, "threads": run.threads, "warnings": run.warnings})
    return 0


def _print_warnings(run: Run) -> None:
    err = Console(stderr=True, highlight=False)
    for w in run.warnings:
        err.print(Text.assemble(("warning", "yellow"), f": {w}"))


def _fail(run: Run, exc: BaseException | str, code: int, kind: str | None = None) -> int:
    _print_warnings(run)
    if run.args.json:
        kind = kind or (type(exc).__name__ if isinstance(exc, BaseException) else "Interrupted")
        problems = list(getattr(exc, "problems", ()))  # each unsupported operation, where it occurs
        _emit({"command": run.args.command, "error": str(exc), "type": kind,
               **({"problems": problems} if problems else {}), "threads": run.threads, "warnings": run.warnings})
    else:
        Console(stderr=True, highlight=False, soft_wrap=True).print(Text.assemble(("error", "red"), f": {exc}"))
    return code


def _emit(obj: dict[str, Any]) -> None:
    """Print ``obj`` as one line of strict JSON: NaN and infinities become null."""
    print(json.dumps(_jsonable(obj), allow_nan=False))


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return _jsonable(o.tolist())
    return o if o is None or isinstance(o, (str, int)) else str(o)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
