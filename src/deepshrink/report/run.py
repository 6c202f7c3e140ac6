"""The compress-run page (``compress --report`` and ``deepshrink report``): the run's summary and
stages, every stored tensor's bytes split into index and weight bytes, each coded stream against
its order-0 entropy, and the accuracy.

The page is built from two sources, either of which may be missing:

- the run: :meth:`CompressionResult.to_dict` (or the ``compress --json`` output, which holds it),
  the only source of the stages and the per-stage scores;
- the file's bytes, read by :func:`deepshrink.inspect.info` with its streams decoded (as
  ``deepshrink info --check-streams`` does), which gives every tensor and every stream's entropy.

So ``deepshrink report FILE.dsz`` makes the same page from a file alone, less the stages.
Everything read from either source is untrusted text and numbers: the page builder escapes the
text, and a value of the wrong type is shown as a dash.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from deepshrink.report.html import Page, fmt, fmt_bytes, fmt_pct, fmt_ratio, new_figure, number, plot_text

__all__ = ["MAX_BARS", "run_page"]

MAX_BARS = 40
"""Tensors (or streams) drawn in a bar chart: the largest ones; the tables list them all."""


def _text(x: Any) -> str:
    return "–" if x is None else str(x)


def _list(d: Mapping[str, Any] | None, key: str) -> list[Mapping[str, Any]]:
    v = d.get(key) if isinstance(d, Mapping) else None
    return [x for x in v if isinstance(x, Mapping)] if isinstance(v, list) else []


def _score(metric: str, x: Any) -> str:
    """A score as the command line shows it: rates in percent, a mean cosine or KL as a number."""
    if metric in ("mean_kl", "mean_cosine"):
        v = number(x)
        return "–" if v is None else f"{v:.4f}"
    return fmt_pct(x)


def _shape(x: Any) -> str:
    return "×".join(map(str, x)) if isinstance(x, (list, tuple)) else "–"


def run_page(
    result: Any = None,
    file: bytes | str | os.PathLike | None = None,
    *,
    evaluation: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> str:
    """The page of a compress run, as one HTML string.

    ``result`` is a :class:`~deepshrink.pipeline.CompressionResult` (its file is ``result.data``),
    the dict of its :meth:`~deepshrink.pipeline.CompressionResult.to_dict` or the ``compress
    --json`` output, or None. ``file`` is the .dsz file (bytes or a path); without it the tensors
    and streams come from the run. ``evaluation`` is a ``deepshrink eval --json`` output to show
    as the file's measured score; ``source`` names the file on the page. At least one of
    ``result`` and ``file`` is needed. A file that does not read raises the file format's
    :class:`~deepshrink.errors.FormatError`."""
    from deepshrink.inspect import info

    run: Mapping[str, Any] | None
    if result is not None and hasattr(result, "to_dict"):
        run = result.to_dict()
        if file is None:
            file = result.data
    else:
        run = result if isinstance(result, Mapping) else None
    if run is None and file is None:
        raise ValueError("run_page needs a compression result, a file, or both")
    inf = info(file, decode=True, engine=False) if file is not None else None
    recipe = _text(run.get("recipe")) if run else _text(_meta(inf).get("recipe"))
    page = Page(f"deepshrink compress report: {recipe}", f"file: {source}" if source else None)
    _summary(page, run, inf)
    _accuracy(page, run, inf, evaluation)
    _stages(page, run)
    _tensors(page, run, inf)
    _streams(page, run, inf)
    return page.render()


def _exact_bytes(n: Any) -> str:
    return "–" if number(n) is None else f"{fmt_bytes(n)} ({int(n):,} B)"


def _meta(inf: Mapping[str, Any] | None) -> Mapping[str, Any]:
    m = inf.get("meta") if inf else None
    return m if isinstance(m, Mapping) else {}


def _summary(page: Page, run: Mapping[str, Any] | None, inf: Mapping[str, Any] | None) -> None:
    page.heading("Summary")
    meta = _meta(inf)
    pick = (lambda k: run.get(k)) if run else (lambda k: None)
    file_bytes = inf["file_bytes"] if inf else pick("file_bytes")
    dense = inf["dense_bytes"] if inf else pick("dense_bytes")
    metric = _text(pick("metric") or "accuracy")
    pairs = [
        ("recipe", _text(pick("recipe") or meta.get("recipe"))),
        ("model", _text(meta.get("model"))),
        ("data", _text(pick("data") or meta.get("data"))),
        ("objective", _text(pick("objective") or meta.get("objective"))),
        ("coder", _text(pick("coder"))),
        ("dense bytes (float32)", _exact_bytes(dense)),
        ("file bytes", _exact_bytes(file_bytes)),
        ("compression ratio", fmt_ratio(inf["ratio"] if inf else pick("ratio"))),
    ]
    if run:
        pairs += [(f"baseline test {metric}", _score(metric, pick("baseline_test_accuracy"))),
                  (f"file's test {metric}", _score(metric, pick("final_test_accuracy"))),
                  ("drop", "–" if number(pick("accuracy_drop_points")) is None
                   else f"{number(pick('accuracy_drop_points')):+.2f} points")]
        stages = _list(run, "stages")
        if stages:
            pairs.append((f"final validation {metric}", _score(metric, stages[-1].get("val_accuracy"))))
        sizes = pick("split_sizes")
        if isinstance(sizes, Mapping):
            pairs.append(("samples (train / val / test)", " / ".join(_text(sizes.get(k)) for k in ("train", "val", "test"))))
        if number(pick("seconds")) is not None:
            pairs.append(("run time", f"{number(pick('seconds')):.1f} s"))
    if inf:
        pairs += [("file", f"{_text(inf.get('producer'))}, format v{_text(inf.get('format_version'))}, header "
                           f"{fmt_bytes(inf.get('header_bytes'))}, payload {fmt_bytes(inf.get('payload_bytes'))}"),
                  ("work per sample", f"{fmt(inf.get('macs_per_sample'))} multiply-adds")]
        spec = inf.get("input")
        if isinstance(spec, Mapping):
            pairs.append(("input", f"{_text(spec.get('dtype'))} {_shape(spec.get('shape'))}"))
    page.keyvalues(pairs)
    if run and inf and number(run.get("file_bytes")) is not None and run.get("file_bytes") != inf["file_bytes"]:
        page.warning(f"The run describes a file of {_text(run.get('file_bytes'))} bytes; this file has "
                     f"{inf['file_bytes']}: the run is probably of another file.")
    if not run:
        page.note("Built from the file alone: the stages and their scores are known only from the compress run "
                  "(deepshrink report FILE --run RUN.json, with the output of compress --json).")


def _accuracy(page: Page, run: Mapping[str, Any] | None, inf: Mapping[str, Any] | None,
              evaluation: Mapping[str, Any] | None) -> None:
    if not run and not evaluation:
        return
    page.heading("Accuracy")
    rows = []
    if run:
        metric = _text(run.get("metric") or "accuracy")
        sizes = run.get("split_sizes") if isinstance(run.get("split_sizes"), Mapping) else {}
        rows.append(["compress run: dense baseline", "test", sizes.get("test"), metric,
                     _score(metric, run.get("baseline_test_accuracy"))])
        rows.append(["compress run: decoded file", "test", sizes.get("test"), metric,
                     _score(metric, run.get("final_test_accuracy"))])
        tm = run.get("final_test_metrics")
        if isinstance(tm, Mapping):
            for k, v in tm.items():
                if k != metric:
                    rows.append(["compress run: decoded file", "test", sizes.get("test"), _text(k), _score(k, v)])
    if evaluation:
        metrics = evaluation.get("metrics") if isinstance(evaluation.get("metrics"), Mapping) else {}
        where = f"this file on {_text(evaluation.get('data'))}"
        for k, v in metrics.items():
            rows.append([where, _text(evaluation.get("split")), evaluation.get("samples"), _text(k), _score(k, v)])
    page.table(["measured", "split", "samples", "metric", "score"], rows, align="llrlr")


def _stages(page: Page, run: Mapping[str, Any] | None) -> None:
    stages = _list(run, "stages")
    if not stages:
        return
    metric = _text(run.get("metric") or "accuracy")
    page.heading("Stages")
    page.table(["stage", f"val {metric}", f"test {metric}", "file bytes", "ratio", "time"],
               [[_text(s.get("stage")), _score(metric, s.get("val_accuracy")), _score(metric, s.get("test_accuracy")),
                 fmt_bytes(s.get("file_bytes")), fmt_ratio(s.get("ratio")),
                 "–" if number(s.get("seconds")) is None else f"{number(s.get('seconds')):.1f} s"] for s in stages],
               align="lrrrrr")
    pts = [(number(s.get("file_bytes")), number(s.get("val_accuracy")), number(s.get("test_accuracy")),
            _text(s.get("stage"))) for s in stages]
    pts = [p for p in pts if p[0] is not None and p[0] > 0]
    if not pts:
        return
    scale = 1 if metric in ("mean_kl", "mean_cosine") else 100  # rates in percent
    fig = new_figure(9, 4.2)
    ax = fig.subplots()
    for col, label, style in ((1, f"validation {plot_text(metric)}", "o-"), (2, f"test {plot_text(metric)}", "s--")):
        xy = [(p[0], scale * p[col]) for p in pts if p[col] is not None]
        if xy:
            ax.plot([x for x, _ in xy], [y for _, y in xy], style, label=label, ms=5)
    for i, (b, v, t, name) in enumerate(pts):
        y = v if v is not None else t
        if y is not None:  # alternately above and below: the last stages often share a point
            ax.annotate(plot_text(name, 24), (b, scale * y), textcoords="offset points",
                        xytext=(6, 7 if i % 2 == 0 else -13), fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.15)
    ax.invert_xaxis()  # the run goes from the dense model (right) to the small file (left)
    ax.set_xlabel("file bytes after the stage (log; smaller to the right)")
    ax.set_ylabel(plot_text(metric) + (" (%)" if scale == 100 else ""))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    page.figure(fig, f"Bytes against {metric} after each stage: each stage's file bytes are exact (the model is "
                     "encoded after every stage); the last stage's scores are the decoded file's.")


def _tensor_rows(run: Mapping[str, Any] | None, inf: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """One dict per stored tensor (from the file) or per layer (from the run, without a file)."""
    if inf:
        out = []
        for t in inf["tensors"]:
            shape = t.get("shape") or []
            numel = int(np.prod(shape)) if shape else 1
            out.append({"name": t["name"], "shape": shape, "encoding": f"{t['encoding']}/{t['layout']}",
                        "coder": t["coder"], "codebook": t["codebook"] or None,
                        "kept": None if t.get("nonzero") is None else t["nonzero"] / max(1, numel),
                        "index": t["index_bytes"], "weight": t["weight_bytes"], "bytes": t["bytes"],
                        "bits": t["bits_per_weight"], "dense": t["dense_bytes"], "ratio": t["ratio"]})
        return out
    out = []
    for r in _list(run, "layers"):
        idx, w = number(r.get("index_bytes")), number(r.get("weight_bytes"))
        total = None if idx is None or w is None else idx + w
        dense = number(r.get("dense_bytes"))
        numel = None if dense is None else dense / 4
        out.append({"name": _text(r.get("name")), "shape": r.get("shape"), "encoding": _text(r.get("encoding")),
                    "coder": _text(run.get("coder")), "codebook": r.get("codebook"), "kept": number(r.get("kept")),
                    "index": idx, "weight": w, "bytes": total,
                    "bits": None if total is None or not numel else 8 * total / numel, "dense": dense,
                    "ratio": number(r.get("ratio"))})
    return out


def _tensors(page: Page, run: Mapping[str, Any] | None, inf: Mapping[str, Any] | None) -> None:
    rows = _tensor_rows(run, inf)
    if not rows:
        return
    page.heading("Bytes per tensor" if inf else "Bytes per layer")
    page.note("Index bytes say where the kept weights are (relative-index gaps); weight bytes say what they are "
              "(codebook indices, values, codebooks, scales). Kept: the fraction of nonzero weights.")
    page.table(["tensor" if inf else "layer", "shape", "encoding", "coder", "codebook", "kept", "index bytes",
                "weight bytes", "bytes", "bits / weight", "dense bytes", "ratio"],
               [[r["name"], _shape(r["shape"]), r["encoding"], r["coder"], r["codebook"], fmt_pct(r["kept"], 1),
                 r["index"], r["weight"], r["bytes"], r["bits"], r["dense"], fmt_ratio(r["ratio"])] for r in rows],
               align="llllrrrrrrrr")
    drawn = sorted((r for r in rows if number(r["index"]) is not None and number(r["weight"]) is not None),
                   key=lambda r: -(r["index"] + r["weight"]))[:MAX_BARS]
    if not drawn:
        return
    drawn = [r for r in rows if r in drawn]  # back in file order
    fig = new_figure(9, 1.2 + 0.32 * len(drawn))
    ax = fig.subplots()
    y = np.arange(len(drawn))
    idx = np.array([r["index"] for r in drawn], dtype=float)
    w = np.array([r["weight"] for r in drawn], dtype=float)
    ax.barh(y, idx, color="#e09a1a", label="index bytes (positions)")
    ax.barh(y, w, left=idx, color="#2f6db5", label="weight bytes (values)")
    ax.set_yticks(y, [plot_text(r["name"], 36) for r in drawn], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("bytes in the file")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower right")
    more = f" (the {MAX_BARS} largest of {len(rows)})" if len(rows) > len(drawn) else ""
    page.figure(fig, f"Bytes per {'tensor' if inf else 'layer'}{more}: index bytes (positions of the kept weights) "
                     "stacked with weight bytes (their values).")


def _stream_rows(run: Mapping[str, Any] | None, inf: Mapping[str, Any] | None) -> list[list[Any]]:
    """``[tensor, stream, coder, symbols, alphabet, entropy bytes, coded bytes]`` per coded stream."""
    if inf:
        return [[t["name"], k, s.get("coder"), s["symbols"], s["alphabet"], s["entropy_bytes"], s["coded_bytes"]]
                for t in inf["tensors"] for k, s in t["streams"].items()]
    return [[_text(s.get("tensor")), _text(s.get("stream")), _text(run.get("coder")), number(s.get("symbols")),
             number(s.get("alphabet")), number(s.get("entropy_bytes")), number(s.get("coded_bytes"))]
            for s in _list(run, "streams")]


def _streams(page: Page, run: Mapping[str, Any] | None, inf: Mapping[str, Any] | None) -> None:
    rows = _stream_rows(run, inf)
    if not rows:
        return
    page.heading("Coded streams against their entropy")
    page.note("Each coded stream's size next to its empirical (order-0) entropy, the least any coder that codes "
              "symbols independently can reach"
              + (" (the file's streams were decoded to measure it, as deepshrink info --check-streams does)."
                 if inf else "."))

    def overhead(e: Any, c: Any) -> str:
        e, c = number(e), number(c)
        return f"{100 * (c / e - 1):+.1f}%" if e and c is not None else "–"

    total_e = sum(number(r[5]) or 0 for r in rows)
    total_c = sum(number(r[6]) or 0 for r in rows)
    page.table(["tensor", "stream", "coder", "symbols", "alphabet", "entropy bytes", "coded bytes", "overhead"],
               [[*r[:5], None if number(r[5]) is None else round(r[5], 1), r[6], overhead(r[5], r[6])] for r in rows]
               + [["all streams", "", "", None, None, round(total_e, 1), int(total_c), overhead(total_e, total_c)]],
               align="lllrrrrr")
    drawn = [r for r in rows if number(r[5]) is not None and number(r[6]) is not None]
    drawn = [r for r in drawn if r in sorted(drawn, key=lambda r: -r[6])[:MAX_BARS]]
    if not drawn:
        return
    fig = new_figure(9, 1.2 + 0.4 * len(drawn))
    ax = fig.subplots()
    y = np.arange(len(drawn))
    ax.barh(y - 0.2, [r[6] for r in drawn], height=0.4, color="#2f6db5", label="coded bytes")
    ax.barh(y + 0.2, [r[5] for r in drawn], height=0.4, color="#9bb7d9", label="order-0 entropy")
    ax.set_yticks(y, [plot_text(f"{r[0]} {r[1]}", 40) for r in drawn], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("bytes")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower right")
    page.figure(fig, "Each coded stream's bytes against its order-0 entropy"
                + (f" (the {MAX_BARS} largest streams)." if len(drawn) < len(rows) else "."))
