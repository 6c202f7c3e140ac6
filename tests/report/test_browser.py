"""Both pages opened in a real headless browser (Debian's chromium, installed by
scripts/ensure-chromium.sh): the screenshot exists, has the window's size and is not blank."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepshrink.report import analysis_page, run_page, write_page

sys.path.insert(0, str(Path(__file__).parent))
from report_helpers import check_page  # noqa: E402

CHROMIUM = os.environ.get("DEEPSHRINK_CHROMIUM", "/usr/bin/chromium")
WIDTH, HEIGHT = 1200, 2000


def screenshot(html: Path, png: Path, profile: Path) -> None:
    """Render ``html`` in headless chromium to ``png``: no network, no sync, a throw-away profile."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}",
           html.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.skipif(not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)),
                    reason=f"no headless browser at {CHROMIUM}: scripts/ensure-chromium.sh installs Debian's chromium "
                           "(it could not here: no apt-get, or not root and no sudo)")
def test_pages_render_in_headless_chromium(doc, compressed, tmp_path):
    pages = {"analysis": analysis_page(doc), "run": run_page(compressed)}
    for name, page in pages.items():
        check_page(page)
        html, png = tmp_path / f"{name}.html", tmp_path / f"{name}.png"
        write_page(html, page)
        screenshot(html, png, tmp_path / f"profile-{name}")
        img = np.asarray(Image.open(png).convert("RGB"), dtype=np.float64)
        assert img.shape == (HEIGHT, WIDTH, 3)
        gray = img.mean(axis=2)
        assert gray.std() > 10  # not blank (about 30 measured): text, tables and plots on white
        assert 0.005 < (gray < 128).mean() < 0.5  # dark ink covers part of the page (2-3%), not all of it
        # the embedded plots rendered: coloured pixels, which the text and tables hardly have (0.6-1.6%)
        assert (np.ptp(img, axis=2) > 60).mean() > 0.002
