"""The HTML report in a real headless Chromium: it renders (a screenshot that is not
blank) and the gallery is in the DOM after the page ran. Skips when no Chromium is
installed (``python3 dev.py test`` installs Debian's when it can)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from seedq.report import render, report_rows
from tests.test_report import RUN, report_world

CHROMIUM = next((p for n in ("chromium", "chromium-browser") if (p := shutil.which(n))), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (apt-get install -y chromium, or dev.py test)"
)
TIMEOUT_S = 90


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    return subprocess.run(
        [CHROMIUM, *flags, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


@pytest.fixture
def page(tmp_path: Path) -> Path:
    rw = report_world(tmp_path)
    target = tmp_path / "report.html"
    target.write_text(render("html", rw.info, report_rows(rw.store, RUN), rw.storage), "utf-8")
    return target


def test_screenshot_is_not_blank(tmp_path: Path, page: Path) -> None:
    png = tmp_path / "shot.png"
    done = chromium(tmp_path, f"--screenshot={png}", "--window-size=1280,900", page.as_uri())
    assert png.exists(), done.stderr[-2000:]
    with Image.open(png) as image:
        assert image.size == (1280, 900)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is None or len(colours) > 1, "the screenshot is one flat colour"


def test_dom_has_the_gallery_and_no_injected_script(tmp_path: Path, page: Path) -> None:
    done = chromium(tmp_path, "--dump-dom", page.as_uri())
    dom = done.stdout
    assert 'id="gallery"' in dom, done.stderr[-2000:]
    assert dom.count('class="card') == 4 and dom.count('class="card failed"') == 1
    assert dom.count("<video ") == 2 and "data:image/jpeg;base64," in dom
    assert "<script>alert(1)</script>" not in dom
    assert "only failed (1)" in dom


def test_the_failure_filter_runs_in_the_browser(tmp_path: Path, page: Path) -> None:
    dom = chromium(tmp_path, "--dump-dom", page.as_uri() + "#failed").stdout
    assert '<body class="only-failed">' in dom
    assert re.search(r'<button[^>]*data-show="failed"[^>]*class="on"', dom), dom[-3000:]
