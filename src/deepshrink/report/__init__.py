"""Self-contained HTML reports: one file, images embedded as PNG data URIs, no scripts, nothing
fetched (a Content-Security-Policy forbids it), every string from models, files and recipes
escaped. :func:`analysis_page` shows ``deepshrink analyze``'s document; :func:`run_page` a
compress run and its file (``compress --report``, ``deepshrink report``)."""

from __future__ import annotations

import os

from deepshrink.report.analysis import analysis_page
from deepshrink.report.html import Page
from deepshrink.report.run import run_page
from deepshrink.util.atomic import write_bytes_atomic

__all__ = ["Page", "analysis_page", "run_page", "write_page"]


def write_page(path: str | os.PathLike, page: str) -> int:
    """Write a rendered page to ``path`` atomically (UTF-8); returns its size in bytes."""
    data = page.encode("utf-8")
    write_bytes_atomic(path, data)
    return len(data)
