"""The ``deepshrink`` command line: a thin layer over the Python API.

Every command takes ``--json`` and then prints exactly one JSON object on stdout; progress bars
go to stderr. Errors print ``error: <message>`` on stderr (or ``{"error": ...}`` with --json)
and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deepshrink import __version__
from deepshrink.errors import DeepshrinkError


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress else None


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="fashion-mnist",
                   help="'fashion-mnist', 'mnist', a folder of IDX files, or an .npz file (default: fashion-mnist)")
    p.add_argument("--val-size", type=_val_size, default=5000,
                   help="validation samples carved from the training data (count, or fraction < 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None,
                   help="use only this many training samples (quick runs); validation and test are subset too")


def _val_size(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction, got {text!r}") from None
    if not (0 <= v < 1 or (v >= 1 and v == int(v) and v < 1e9)):
        raise argparse.ArgumentTypeError(f"expected a whole count ≥ 1 or a fraction in [0, 1), got {text!r}")
    return v


def _load_data(args: argparse.Namespace):
    from deepshrink.data import load_dataset

    val = int(args.val_size) if args.val_size >= 1 else args.val_size
    data = load_dataset(args.data, val_size=val, seed=args.seed)
    if args.limit:
        data = data.subset(args.limit, max(1, args.limit // 5), max(1, args.limit // 5), seed=args.seed)
    return data


def _model(args: argparse.Namespace, num_classes: int):
    from deepshrink.models import build_model, load_weights

    model = build_model(args.model, num_classes=num_classes)
    if getattr(args, "weights", None):
        load_weights(model, args.weights)
    return model


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def _kb(n: float) -> str:
    return f"{n / 1000:.1f} KB" if n >= 1000 else f"{int(n)} B"


# ----------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from deepshrink.models import save_weights
    from deepshrink.train import TrainConfig, evaluate, fit

    import torch

    data = _load_data(args)
    torch.manual_seed(args.seed)  # the initial weights too: one seed, one result
    model = _model(args, data.num_classes)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    hist = fit(model, data.tensors("train"), data.tensors("val"), cfg, desc=f"train {args.model}",
               progress=_progress(args))
    test_acc = evaluate(model, data.tensors("test"))
    save_weights(model, args.output, metadata={"model": args.model, "data": str(args.data)})
    out = {
        "command": "train", "model": args.model, "data": str(args.data), "output": str(args.output),
        "epochs": args.epochs, "best_epoch": hist.best_epoch + 1, "val_accuracy": hist.best_val_accuracy,
        "test_accuracy": test_acc, "seconds": hist.seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if not args.json:
        console.print(f"trained [bold]{args.model}[/] in {hist.seconds:.1f} s: validation {_pct(out['val_accuracy'])} "
                      f"(epoch {out['best_epoch']}), test {_pct(test_acc)} → {escape(str(args.output))}")
    return out


def cmd_compress(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from deepshrink.pipeline import compress
    from deepshrink.recipes import load_recipe
    from deepshrink.util.atomic import write_bytes_atomic

    data = _load_data(args)
    model = _model(args, data.num_classes)
    recipe = load_recipe(args.recipe)
    if args.coder:
        recipe = recipe.with_coder(args.coder)
    start = time.perf_counter()
    result = compress(model, data, recipe, progress=_progress(args),
                      meta={"model": args.model, "data": str(args.data)})
    write_bytes_atomic(args.output, result.data)
    out = {"command": "compress", "output": str(args.output), "seconds": time.perf_counter() - start,
           **result.to_dict()}
    if not args.json:
        print_compress(console, out)
    return out


def print_compress(console: Console, out: dict[str, Any]) -> None:
    t = Table(title=escape(f"deepshrink compress: recipe {out['recipe']}, coder {out['coder']}"))
    for col in ("stage", "val acc", "test acc", "bytes", "ratio", "time"):
        t.add_column(col, justify="right" if col != "stage" else "left")
    for s in out["stages"]:
        t.add_row(s["stage"], _pct(s["val_accuracy"]), _pct(s["test_accuracy"]), _kb(s["file_bytes"]),
                  f"{s['ratio']:.1f}×", f"{s['seconds']:.1f} s")
    console.print(t)
    for s in out["stages"]:
        if s["stage"] != "lowrank":
            continue
        fac = Table(title=escape(f"low rank: val accuracy {_pct(s['detail']['val_accuracy_before_finetune'])} "
                                 f"after factorising → {_pct(s['detail']['val_accuracy_after_finetune'])} "
                                 "after fine-tuning"))
        for col in ("layer", "method", "rank", "layers", "weights", "non-zero"):
            fac.add_column(col, justify="left" if col in ("layer", "method", "layers") else "right")
        for name, d in s["detail"]["layers"].items():
            fac.add_row(escape(name), d["method"] + (f" ({d['importance']})" if "importance" in d else ""),
                        str(d["rank"]), " → ".join("×".join(map(str, sh)) for sh in d["shapes"]),
                        f"{d['weights_before']:,} → {d['weights_after']:,}", f"{d['nonzero_after']:,}")
        console.print(fac)
    lt = Table(title="per layer")
    for col in ("layer", "shape", "kept", "bits", "encoding", "index bytes", "weight bytes", "ratio"):
        lt.add_column(col, justify="left" if col in ("layer", "encoding") else "right", no_wrap=col == "layer")
    for r in out["layers"]:
        lt.add_row(r["name"], "×".join(map(str, r["shape"])), _pct(r["kept"]), str(r["bits"]), r["encoding"],
                   _kb(r["index_bytes"]), _kb(r["weight_bytes"]), f"{r['ratio']:.1f}×")
    console.print(lt)
    st = Table(title="coded streams: size next to the empirical (order-0) entropy")
    for col in ("tensor", "stream", "symbols", "alphabet", "entropy", "coded", "overhead"):
        st.add_column(col, justify="left" if col in ("tensor", "stream") else "right")
    for r in out["streams"]:
        ent = r["entropy_bytes"]
        st.add_row(escape(r["tensor"]), r["stream"], f"{r['symbols']:,}", str(r["alphabet"]), _kb(ent),
                   _kb(r["coded_bytes"]), f"{100 * (r['coded_bytes'] / ent - 1):+.1f}%" if ent > 0 else "-")
    if out["streams"]:
        console.print(st)
    console.print(
        f"dense {_kb(out['dense_bytes'])} → file {_kb(out['file_bytes'])} ([bold]{out['ratio']:.1f}×[/]); "
        f"test accuracy {_pct(out['baseline_test_accuracy'])} → {_pct(out['final_test_accuracy'])} "
        f"(measured from the file; {out['accuracy_drop_points']:+.2f} points drop) → {escape(out['output'])}"
    )


def cmd_eval(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from deepshrink.runtime import load
    from deepshrink.train import evaluate

    model = load(args.file)
    data = _load_data(args)
    if tuple(data.input_spec.shape) != tuple(model.input_spec.shape):
        raise DeepshrinkError(
            f"data samples have shape {data.input_spec.shape}, the file expects {model.input_spec.shape}"
        )
    x, y = getattr(data, f"x_{args.split}"), getattr(data, f"y_{args.split}")
    start = time.perf_counter()
    import torch

    acc = evaluate(model, (model.input_spec.apply(x), torch.as_tensor(y, dtype=torch.long)))
    out = {"command": "eval", "file": str(args.file), "data": str(args.data), "split": args.split,
           "samples": int(len(y)), "accuracy": acc, "seconds": time.perf_counter() - start,
           "file_bytes": model.file_bytes}
    if not args.json:
        console.print(f"{escape(str(args.file))}: accuracy {_pct(acc)} on {len(y)} {args.split} samples of {escape(str(args.data))} "
                      "(input scaling and normalisation from the file)")
    return out


def cmd_info(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from deepshrink.fileformat.inspect import info

    out = {"command": "info", "file": str(args.file), **info(args.file)}
    if not args.json:
        console.print(f"[bold]{escape(str(args.file))}[/]: {escape(out['producer'])}, format v{out['format_version']}, "
                      f"{_kb(out['file_bytes'])} (header {_kb(out['header_bytes'])}), dense {_kb(out['dense_bytes'])}, "
                      f"ratio {out['ratio']:.1f}×")
        spec = out["input"]
        console.print(escape(f"input: shape {spec['shape']} {spec['dtype']}, × {spec['scale']:.6g}, mean {spec['mean']}, std {spec['std']}"))
        g = Table(title="graph")
        for col in ("node", "op", "inputs", "params"):
            g.add_column(col)
        for n in out["graph"]:
            g.add_row(escape(n["name"]), n["op"], escape(", ".join(n["inputs"])),
                      escape(", ".join(f"{r} {'×'.join(map(str, s))}" for r, s in n["params"].items())))
        console.print(g)
        t = Table(title="tensors")
        for col in ("tensor", "shape", "encoding", "coder", "codebook", "bytes", "dense", "ratio"):
            t.add_column(col, justify="right" if col in ("bytes", "dense", "ratio", "codebook") else "left")
        for x in out["tensors"]:
            t.add_row(escape(x["name"]), "×".join(map(str, x["shape"])), f"{x['encoding']}/{x['layout']}", x["coder"],
                      str(x["codebook"]), _kb(x["bytes"]), _kb(x["dense_bytes"]),
                      f"{x['ratio']:.1f}×" if x["ratio"] else "-")
        console.print(t)
    return out


def cmd_export(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from deepshrink.export import export

    out = {"command": "export", "file": str(args.file), **export(args.file, args.output, args.format)}
    if not args.json:
        extra = ""
        if out["format"] == "onnx":
            extra = (f"; onnxruntime vs PyTorch: max |diff| {out['max_abs_diff']:.2e}, "
                     f"argmax agreement {_pct(out['argmax_agreement'])}")
        console.print(f"exported {escape(str(args.file))} → {escape(out['path'])} ({out['format']}, {_kb(out['bytes'])}){extra}")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepshrink", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"deepshrink {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = sub.add_parser("train", help="train a model and save its weights as safetensors")
    p.add_argument("--model", required=True, help="zoo name (lenet-300-100, lenet-5) or package.module:factory")
    _add_data(p)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("-o", "--output", required=True, type=Path)
    common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compress", help="compress a trained model into a .dsz file")
    p.add_argument("--model", required=True)
    p.add_argument("--weights", required=True, type=Path, help="safetensors weights of the trained model")
    _add_data(p)
    p.add_argument("--recipe", default="deep-compression", help="built-in recipe name or a TOML file")
    p.add_argument("--coder", choices=["huffman", "ans", "fixed"], default=None, help="override the recipe's coder")
    p.add_argument("-o", "--output", required=True, type=Path)
    common(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("eval", help="accuracy of a .dsz file, computed from the file alone")
    p.add_argument("file", type=Path)
    _add_data(p)
    p.add_argument("--split", choices=["test", "val", "train"], default="test")
    common(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("info", help="structure and per-layer / per-section bytes of a .dsz file")
    p.add_argument("file", type=Path)
    common(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export", help="export a .dsz file to ONNX or dense safetensors")
    p.add_argument("file", type=Path)
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument("--format", choices=["onnx", "safetensors"], default=None)
    common(p)
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        out = args.func(args, console)
    except (DeepshrinkError, OSError) as exc:  # bad input: a typed message, exit status 2
        return _fail(args, exc, 2)
    except Exception as exc:  # a bug: still one JSON object with --json, then the traceback
        _fail(args, exc, 1)
        if not args.json:
            raise
        return 1
    if args.json:
        print(json.dumps(out, default=_jsonable, allow_nan=False))
    return 0


def _fail(args: argparse.Namespace, exc: BaseException, code: int) -> int:
    if args.json:
        print(json.dumps({"command": args.command, "error": str(exc), "type": type(exc).__name__}))
    else:
        Console(stderr=True).print(f"[red]error[/]: {escape(str(exc))}", highlight=False)
    return code


def _jsonable(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
