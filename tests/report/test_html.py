"""The page builder: text is escaped in one place, numbers are formatted, figures are embedded
PNGs, nothing can load or run."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from deepshrink.report.html import CSP, Page, escape, fmt, fmt_bytes, fmt_pct, fmt_points, new_figure, number, plot_text
from deepshrink.util.atomic import TMP_MARK

sys.path.insert(0, str(Path(__file__).parent))
from report_helpers import HOSTILE, check_page  # noqa: E402


def test_every_block_escapes_its_text():
    page = Page(HOSTILE, subtitle=HOSTILE)
    page.heading(HOSTILE).heading(HOSTILE, 3).paragraph(HOSTILE).note(HOSTILE).warning(HOSTILE)
    page.keyvalues([(HOSTILE, HOSTILE)])
    page.table([HOSTILE, "n"], [[HOSTILE, 1], [HOSTILE, None]], caption=HOSTILE)
    fig = new_figure(3, 2)
    fig.subplots().plot([0, 1], [0, 1], label=plot_text(HOSTILE))
    page.figure(fig, HOSTILE)
    html = page.render()
    parsed = check_page(html)
    assert parsed.images == 1
    assert parsed.joined.count(HOSTILE) >= 11  # title, h1, subtitle, h2, h3, p x3, dt, dd, th, 2 td, caption...
    assert ('img', 'alt', HOSTILE) in parsed.attrs  # attribute values are escaped too (quote=True)
    assert escape('"\'<>&') == "&quot;&#x27;&lt;&gt;&amp;"
    assert f'content="{escape(CSP)}"' in html


def test_numbers_are_formatted_and_aligned():
    assert fmt(1234567) == "1,234,567" and fmt(0.123456) == "0.1235" and fmt(None) == "–"
    assert fmt(1e-5) == "1.000e-05" and fmt(12345.6) == "12,346" and fmt(True) == "yes" and fmt([3, 4]) == "3×4"
    assert fmt_bytes(812) == "812 B" and fmt_bytes(52775) == "52.8 KB" and fmt_bytes(1066440) == "1.07 MB"
    assert fmt_pct(0.8945) == "89.45%" and fmt_pct("x") == "–" and fmt_points(-0.5) == "-0.50"
    assert number(True) is None and number("1") is None and number(math.nan) is None and number(2) == 2.0
    page = Page("t").table(["name", "value", "maybe"], [["a", 1.5, None], ["b", 2, 3]])
    html = page.render()
    assert '<th class="l">name</th><th class="r">value</th><th class="r">maybe</th>' in html
    assert '<td class="r">1.5</td>' in html and '<td class="r">–</td>' in html


def test_plot_labels_do_not_start_mathtext():
    bad = "$\\frac{$"  # a layer name that matplotlib's mathtext cannot parse
    fig = new_figure(3, 2)
    fig.subplots().set_title(bad)
    with pytest.raises(ValueError):
        Page("t").figure(fig, "fails")
    fig = new_figure(3, 2)
    ax = fig.subplots()
    ax.set_title(plot_text(bad))
    ax.set_xlabel(plot_text("x" * 500))
    Page("t").figure(fig, "ok")
    assert plot_text("a$b") == r"a\$b" and len(plot_text("x" * 500)) == 48


def test_write_is_atomic_utf8(tmp_path):
    page = Page("ünïcode ✓")
    out = tmp_path / "a" / "p.html"
    page.write(out)
    assert out.read_text(encoding="utf-8") == page.render()
    assert not [p for p in out.parent.iterdir() if TMP_MARK in p.name]
    with pytest.raises(IsADirectoryError):
        page.write(tmp_path)
