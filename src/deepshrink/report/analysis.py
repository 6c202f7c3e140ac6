"""The analysis page (``deepshrink analyze``): per-layer sensitivity to each technique against
the layer's real coded bytes, weight robustness (noise, Fisher information) and singular-value
spectra before and after pruning, from the analysis document (a JSON dict).

The document's schema (every key but ``model``, ``layers`` and ``baseline`` may be absent; the
numbers are ints or floats, the strings untrusted)::

    {"model": str, "data": str, "metric": "accuracy", "seconds": float, "dense_bytes": int,
     "baseline": {"val": float},
     "layers": [{"name", "kind", "shape": [int], "params": int, "dense_bytes": int}],
     "curves": [{"layer", "technique", "setting", "points": [{"value", "bytes", "val"}]}],
     "noise": [{"layer", "points": [{"scale", "val"}]}],
     "fisher": [{"layer", "trace", "per_weight"}],
     "spectra": [{"layer", "sparsity", "dense": [float], "pruned": [float], "rank90_dense", "rank90_pruned"}]}

A value that is not what the schema says (a string for a number, NaN, a missing list) is left
out of the plots and shown as a dash in the tables rather than failing the page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from deepshrink.report.html import Page, fmt_bytes, fmt_pct, fmt_points, new_figure, number, plot_text

__all__ = ["TECHNIQUES", "analysis_page"]

TECHNIQUES = {
    "prune": "Pruning (magnitude)",
    "share": "Weight sharing (k-means codebook)",
    "quantize": "Uniform quantisation",
    "svd": "Low rank (truncated SVD)",
    "slr": "Sparse plus low rank (SLR)",
}
"""The techniques' section titles, in the order the page shows them (others follow by name)."""

MAX_LEGEND = 16
"""Layers named in a figure's legend; with more, the legend is left out (the tables name them)."""


def _items(doc: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    v = doc.get(key)
    return [x for x in v if isinstance(x, Mapping)] if isinstance(v, list) else []


def _text(x: Any) -> str:
    return "–" if x is None else str(x)


def _drop(base: float | None, val: Any) -> str:
    """Points lost against the baseline (positive: worse), as text."""
    v = number(val)
    return fmt_points(None if base is None or v is None else 100 * (base - v))


def _legend(ax: Any, n: int) -> None:
    if 0 < n <= MAX_LEGEND:
        ax.legend(fontsize=8, loc="best")


def analysis_page(doc: Mapping[str, Any]) -> str:
    """The analysis page of ``doc`` (see the module docstring for its schema), as one HTML string."""
    metric = _text(doc.get("metric", "accuracy"))
    baseline = doc.get("baseline") if isinstance(doc.get("baseline"), Mapping) else {}
    base = number(baseline.get("val"))
    page = Page(f"deepshrink analysis: {_text(doc.get('model'))}",
                "How sensitive each layer is to each compression technique, measured on the validation split "
                "with the layer's real coded bytes; how robust its weights are; and how pruning changes its spectrum.")
    layers = _items(doc, "layers")
    _summary(page, doc, layers, base, metric)
    _layers(page, layers)
    _curves(page, _items(doc, "curves"), base, metric)
    _noise(page, _items(doc, "noise"), base, metric)
    _fisher(page, _items(doc, "fisher"))
    _spectra(page, _items(doc, "spectra"))
    return page.render()


def _summary(page: Page, doc: Mapping[str, Any], layers: list, base: float | None, metric: str) -> None:
    page.heading("Summary")
    params = [number(x.get("params")) for x in layers]
    seconds = number(doc.get("seconds"))
    page.keyvalues([
        ("model", _text(doc.get("model"))),
        ("data", _text(doc.get("data"))),
        (f"baseline validation {metric}", fmt_pct(base)),
        ("dense bytes (float32)", fmt_bytes(doc.get("dense_bytes"))),
        ("layers analysed", len(layers)),
        ("parameters in them", int(sum(p for p in params if p is not None))),
        ("analysis runtime", "–" if seconds is None else f"{seconds:.1f} s"),
    ])
    page.note(f"Drops are in points of validation {metric} against the baseline; one layer is changed at a "
              "time, the others stay dense.")


def _layers(page: Page, layers: list) -> None:
    if not layers:
        return
    page.heading("Layers")
    page.table(["layer", "kind", "shape", "parameters", "dense bytes"],
               [[_text(x.get("name")), _text(x.get("kind")),
                 "×".join(map(str, x["shape"])) if isinstance(x.get("shape"), list) else "–",
                 x.get("params"), fmt_bytes(x.get("dense_bytes"))] for x in layers],
               align="llrrr")


def _points(curve: Mapping[str, Any], *keys: str) -> list[tuple]:
    """The curve's points with every key in ``keys`` a finite number, sorted by the first."""
    pts = curve.get("points") if isinstance(curve.get("points"), list) else []
    out = [tuple(number(p.get(k)) for k in keys) for p in pts if isinstance(p, Mapping)]
    return sorted((p for p in out if None not in p), key=lambda p: p[0])


def _curves(page: Page, curves: list, base: float | None, metric: str) -> None:
    by_tech: dict[str, list] = {}
    for c in curves:
        by_tech.setdefault(_text(c.get("technique")), []).append(c)
    order = [t for t in TECHNIQUES if t in by_tech] + sorted(t for t in by_tech if t not in TECHNIQUES)
    if order:
        page.heading("Sensitivity per technique")
    for tech in order:
        group = by_tech[tech]
        settings = sorted({_text(c.get("setting")) for c in group})
        setting = " / ".join(settings)
        page.heading(TECHNIQUES.get(tech, f"Technique {tech}"), 3)
        fig = new_figure(11, 4.2)
        ax_b, ax_s = fig.subplots(1, 2)
        drawn, whole = 0, True
        for c in group:
            pts = _points(c, "bytes", "val")
            pts = [(b, v) for b, v in pts if b > 0]
            if base is None or not pts:
                continue
            line, = ax_b.plot([b for b, _ in pts], [100 * (base - v) for _, v in pts], marker="o", ms=3,
                              label=plot_text(c.get("layer")))
            sp = _points(c, "value", "val")
            whole = whole and all(s == int(s) for s, _ in sp)
            ax_s.plot([s for s, _ in sp], [100 * (base - v) for _, v in sp], marker="o", ms=3, color=line.get_color())
            drawn += 1
        if drawn:
            ax_b.set_xscale("log")
            ax_b.set_xlabel("the layer's coded bytes (log)")
            ax_s.set_xlabel(plot_text(setting))
            if whole:  # bits and ranks
                ax_s.xaxis.set_major_locator(MaxNLocator(integer=True))
            for ax in (ax_b, ax_s):
                ax.set_ylabel(f"validation {plot_text(metric)} drop (points)")
                ax.axhline(0, color="grey", lw=0.8)
                ax.grid(alpha=0.3, which="both")
            _legend(ax_b, drawn)
            fig.suptitle(plot_text(TECHNIQUES.get(tech, tech), 80), fontsize=11)
            page.figure(fig, f"{TECHNIQUES.get(tech, tech)}: validation {metric} drop against the layer's coded "
                             f"bytes (left) and against the {setting} (right), one line per layer.")
        rows = []
        for c in group:
            for value, nbytes, val in _points(c, "value", "bytes", "val"):
                rows.append([_text(c.get("layer")), _text(c.get("setting")), value, fmt_bytes(nbytes),
                             fmt_pct(val), _drop(base, val)])
        if rows:
            page.table(["layer", "setting", "value", "coded bytes", f"val {metric}", "drop (points)"], rows,
                       align="llrrrr")
        else:
            page.note("No valid points for this technique.")


def _noise(page: Page, noise: list, base: float | None, metric: str) -> None:
    if not noise:
        return
    page.heading("Robustness to weight noise")
    page.note("Gaussian noise of standard deviation scale × std(W) added to one layer's weights at a time.")
    fig = new_figure(9, 4.2)
    ax = fig.subplots()
    drawn = 0
    rows = []
    for c in noise:
        pts = _points(c, "scale", "val")
        for s, v in pts:
            rows.append([_text(c.get("layer")), s, fmt_pct(v), _drop(base, v)])
        if base is None or not pts:
            continue
        ax.plot([s for s, _ in pts], [100 * (base - v) for _, v in pts], marker="o", ms=3,
                label=plot_text(c.get("layer")))
        drawn += 1
    if drawn:
        scales = [s for c in noise for s, _ in _points(c, "scale", "val")]
        if scales and min(scales) > 0:
            ax.set_xscale("log")
        ax.set_xlabel("relative noise scale σ / std(W)")
        ax.set_ylabel(f"validation {plot_text(metric)} drop (points)")
        ax.axhline(0, color="grey", lw=0.8)
        ax.grid(alpha=0.3, which="both")
        _legend(ax, drawn)
        page.figure(fig, f"Validation {metric} drop against the relative noise scale, one line per layer.")
    if rows:
        page.table(["layer", "scale", f"val {metric}", "drop (points)"], rows, align="lrrr")


def _fisher(page: Page, fisher: list) -> None:
    if not fisher:
        return
    page.heading("Second-order sensitivity (diagonal Fisher information)")
    names = [_text(f.get("layer")) for f in fisher]
    per = [number(f.get("per_weight")) for f in fisher]
    shown = [(n, p) for n, p in zip(names, per) if p is not None and p > 0]
    if shown:
        fig = new_figure(max(5.0, min(11.0, 1.0 + 0.7 * len(shown))), 3.8)
        ax = fig.subplots()
        ax.bar(range(len(shown)), [p for _, p in shown], color="#2f6db5")
        ax.set_xticks(range(len(shown)), [plot_text(n, 24) for n, _ in shown], rotation=30 if len(shown) > 4 else 0,
                      ha="right" if len(shown) > 4 else "center", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("Fisher trace per weight (log)")
        ax.grid(alpha=0.3, axis="y", which="both")
        page.figure(fig, "Mean diagonal Fisher information per weight: how much the loss rises, to second order, "
                         "when a layer's weights move. Higher means more sensitive.")
    page.table(["layer", "Fisher trace", "per weight"],
               [[n, number(f.get("trace")), p] for n, f, p in zip(names, fisher, per)], align="lrr")


def _energy(values: Any) -> np.ndarray | None:
    """Cumulative energy (squared singular values) of a spectrum, or None when it is not one."""
    if not isinstance(values, list) or not values:
        return None
    s = [number(v) for v in values]
    if any(v is None for v in s):
        return None
    e = np.square(np.abs(np.asarray(s, dtype=np.float64)))
    total = e.sum()
    return np.cumsum(e) / total if total > 0 else None


def _spectra(page: Page, spectra: list) -> None:
    if not spectra:
        return
    page.heading("Singular-value spectra: dense against pruned")
    page.note("Cumulative energy (sum of squared singular values) against the fraction of the full rank kept. "
              "A curve that rises faster is closer to low rank: the 90% rank says how many singular values hold "
              "90% of the energy.")
    drawable = [(sp, _energy(sp.get("dense")), _energy(sp.get("pruned"))) for sp in spectra]
    drawable = [d for d in drawable if d[1] is not None or d[2] is not None]
    if drawable:
        cols = min(3, len(drawable))
        rows = math.ceil(len(drawable) / cols)
        fig = new_figure(3.7 * cols + 0.5, 3.0 * rows + 0.3)
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        for ax, (sp, dense, pruned) in zip(axes, drawable):
            for e, style, label in ((dense, "-", "dense"), (pruned, "--", "pruned")):
                if e is not None:
                    ax.plot(np.arange(1, len(e) + 1) / len(e), e, style, label=label)
            ax.axhline(0.9, color="grey", lw=0.8, ls=":")
            s = number(sp.get("sparsity"))
            ax.set_title(plot_text(sp.get("layer"), 30) + ("" if s is None else f", sparsity {100 * s:.0f}%"),
                         fontsize=9)
            ax.set_xlabel("rank / full rank", fontsize=8)
            ax.set_ylabel("cumulative energy", fontsize=8)
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
        for ax in axes[len(drawable):]:
            ax.set_visible(False)
        page.figure(fig, "Cumulative energy of the squared singular values, dense (solid) and after magnitude "
                         "pruning (dashed), per layer; the dotted line marks 90%.")
    rows = []
    for sp in spectra:
        full = len(sp["dense"]) if isinstance(sp.get("dense"), list) else None
        r_d, r_p = number(sp.get("rank90_dense")), number(sp.get("rank90_pruned"))
        rows.append([_text(sp.get("layer")), fmt_pct(sp.get("sparsity"), 0), full,
                     None if r_d is None else int(r_d), None if r_p is None else int(r_p),
                     None if r_d is None or r_p is None else int(r_p - r_d),
                     fmt_pct(r_d / full, 1) if r_d is not None and full else "–",
                     fmt_pct(r_p / full, 1) if r_p is not None and full else "–"])
    page.table(["layer", "sparsity", "full rank", "rank for 90% (dense)", "rank for 90% (pruned)", "change",
                "dense / full", "pruned / full"], rows, align="lrrrrrrr")
