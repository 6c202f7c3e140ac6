"""A tiny builder of self-contained HTML pages: headings, paragraphs, tables, key-value lists and
matplotlib figures embedded as PNG data URIs, in one file that opens in a browser with no server.

Every string that reaches the page goes through :func:`escape` (``html.escape`` with
``quote=True``), here and nowhere else: the builder's methods take plain text and numbers, never
markup, so a layer name such as ``<script>`` taken from a model, a file or a recipe is shown as
text. A Content-Security-Policy (``default-src 'none'; img-src data:; style-src 'unsafe-inline'``)
is the second wall: even markup that slipped through could load nothing and run nothing.

Figures are drawn with matplotlib's Agg renderer into :class:`matplotlib.figure.Figure` objects
(no pyplot state, no display needed). Text drawn in a figure is not HTML, but matplotlib reads
``$...$`` as mathematics: labels from untrusted input go through :func:`plot_text`.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from deepshrink._version import __version__
from deepshrink.util.atomic import write_bytes_atomic

__all__ = ["CSP", "Page", "escape", "fmt", "fmt_bytes", "fmt_pct", "fmt_points", "fmt_ratio", "new_figure", "number",
           "plot_text"]

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""The page's Content-Security-Policy: nothing is fetched and nothing runs, whatever it holds."""

MAX_LABEL = 48
"""Characters of an untrusted name kept in a figure label (tables show names whole)."""

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d2430;
 background:#fff;margin:0 auto;max-width:1120px;padding:18px 28px 40px}
h1{font-size:1.6em;margin:.2em 0 .1em;border-bottom:2px solid #2f6db5;padding-bottom:.2em}
h2{font-size:1.25em;margin:1.6em 0 .4em;color:#204a80}
h3{font-size:1.05em;margin:1.2em 0 .3em}
p{margin:.4em 0 .7em;max-width:78em}
p.note{color:#5a6575;font-size:.92em}
p.warn{background:#fff4e0;border-left:4px solid #e09a1a;padding:.4em .7em}
table{border-collapse:collapse;margin:.5em 0 1.1em;font-size:.92em}
th,td{border:1px solid #d5dbe3;padding:3px 9px;vertical-align:top}
th{background:#eef2f7;text-align:left;font-weight:600}
tr:nth-child(even) td{background:#f8fafc}
td.r,th.r{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.l{text-align:left;overflow-wrap:break-word}
caption{caption-side:top;text-align:left;color:#5a6575;padding-bottom:3px}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 18px;margin:.5em 0 1em}
dl.kv dt{font-weight:600;color:#3a4656}
dl.kv dd{margin:0;overflow-wrap:anywhere;font-variant-numeric:tabular-nums}
figure{margin:.6em 0 1.4em}
figure img{max-width:100%;height:auto;border:1px solid #e3e7ee}
figcaption{color:#5a6575;font-size:.92em;margin-top:.2em;max-width:78em}
footer{margin-top:3em;color:#8a94a3;font-size:.85em;border-top:1px solid #e3e7ee;padding-top:.5em}
"""


def escape(value: Any) -> str:
    """The one place text becomes HTML: ``html.escape(str(value), quote=True)``."""
    return html.escape(str(value), quote=True)


def number(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is not a finite number (untrusted input:
    strings, booleans, NaN and infinities are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def fmt(value: Any) -> str:
    """A cell's text: whole numbers with thousands separators, other numbers to 4 significant
    digits, None as a dash, anything else as ``str``."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, (list, tuple)):
        return "×".join(fmt(v) for v in value)
    return str(value)


def fmt_bytes(n: Any) -> str:
    """Bytes as people read them: ``812 B``, ``52.8 KB``, ``1.07 MB`` (decimal units, as the CLI)."""
    v = number(n)
    if v is None:
        return "–"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f} MB"
    return f"{v / 1e3:.1f} KB" if abs(v) >= 1e3 else f"{v:.0f} B"


def fmt_pct(x: Any, digits: int = 2) -> str:
    """A rate in 0..1 as a percentage."""
    v = number(x)
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def fmt_points(x: Any) -> str:
    """A change in percentage points, signed, to two decimals."""
    v = number(x)
    return "–" if v is None else f"{v:+.2f}"


def fmt_ratio(x: Any) -> str:
    v = number(x)
    return "–" if v is None else f"{v:.1f}×"


def plot_text(value: Any, limit: int = MAX_LABEL) -> str:
    """An untrusted string as a matplotlib label: ``$`` escaped (no mathtext), cut to ``limit``."""
    s = str(value)
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("\\", "\\\\").replace("$", r"\$")


def new_figure(width: float = 9.0, height: float = 4.2):
    """A matplotlib figure drawn with Agg, outside pyplot (no global state, no display)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


class Page:
    """One HTML page, built block by block; :meth:`render` returns it as a string.

    The methods take text and numbers (escaped here), never markup."""

    def __init__(self, title: str, subtitle: str | None = None):
        self.title = str(title)
        self._blocks: list[str] = [f"<h1>{escape(title)}</h1>"]
        if subtitle:
            self.note(subtitle)

    def heading(self, text: str, level: int = 2) -> Page:
        level = min(max(int(level), 2), 4)
        self._blocks.append(f"<h{level}>{escape(text)}</h{level}>")
        return self

    def paragraph(self, text: str, kind: str | None = None) -> Page:
        """A paragraph; ``kind`` ``"note"`` (small, grey) or ``"warn"`` (highlighted)."""
        cls = f' class="{kind}"' if kind in ("note", "warn") else ""
        self._blocks.append(f"<p{cls}>{escape(text)}</p>")
        return self

    def note(self, text: str) -> Page:
        return self.paragraph(text, "note")

    def warning(self, text: str) -> Page:
        return self.paragraph(text, "warn")

    def keyvalues(self, pairs: Iterable[tuple[str, Any]]) -> Page:
        """A definition list of ``(key, value)``; values formatted by :func:`fmt`."""
        items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(fmt(v))}</dd>" for k, v in pairs)
        self._blocks.append(f'<dl class="kv">{items}</dl>')
        return self

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | Sequence[str] | None = None,
              caption: str | None = None) -> Page:
        """A table. Cells are formatted by :func:`fmt` (pre-format a cell as a string to choose
        its text). ``align`` gives ``"l"`` or ``"r"`` per column (a string such as ``"llrr"``);
        by default a column is right-aligned when its cells are numbers."""
        rows = [list(r) for r in rows]
        if align is None:
            align = ["r" if rows and all(number(r[i]) is not None or r[i] is None for r in rows if i < len(r))
                     and any(number(r[i]) is not None for r in rows if i < len(r)) else "l"
                     for i in range(len(headers))]
        align = ["r" if a == "r" else "l" for a in align]
        head = "".join(f'<th class="{a}">{escape(h)}</th>' for h, a in zip(headers, align))
        body = "".join(
            "<tr>" + "".join(f'<td class="{align[i] if i < len(align) else "l"}">{escape(fmt(c))}</td>'
                             for i, c in enumerate(r)) + "</tr>"
            for r in rows
        )
        cap = f"<caption>{escape(caption)}</caption>" if caption else ""
        self._blocks.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return self

    def figure(self, fig: Any, caption: str) -> Page:
        """Embed a matplotlib figure as a PNG data URI (and close it if pyplot holds it)."""
        buf = io.BytesIO()
        try:
            fig.savefig(buf, format="png", dpi=100)
        finally:
            if "matplotlib.pyplot" in sys.modules:
                sys.modules["matplotlib.pyplot"].close(fig)
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        self._blocks.append(f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}">'
                            f"<figcaption>{escape(caption)}</figcaption></figure>")
        return self

    def render(self) -> str:
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{escape(CSP)}">'
            '<meta name="referrer" content="no-referrer">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(self.title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(self._blocks)
            + f"\n<footer>{escape(f'made by deepshrink {__version__}; one self-contained file, no scripts')}</footer>"
            "\n</body></html>\n"
        )

    def write(self, path: str | os.PathLike) -> None:
        """Write the page to ``path`` atomically (UTF-8)."""
        write_bytes_atomic(path, self.render().encode("utf-8"))
