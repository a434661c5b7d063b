"""`seedq run --report FILE` in embedded mode: the HTML report is written before the
process (and with it the run's state) ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, seedq_cli


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_embedded_run_writes_its_html_report(tmp_path: Path, no_config_env: dict[str, str]) -> None:
    env = no_config_env
    out, report = tmp_path / "videos", tmp_path / "reports" / "run.html"
    args = ["run", str(REPO / "manifests/example.yaml"), "--out", str(out), "--report", str(report)]
    done = seedq_cli(*args, env=env, cwd=tmp_path, timeout=200)
    assert done.returncode == 0, done.stdout + done.stderr
    page = report.read_text(encoding="utf-8")
    assert page.count("data:image/jpeg;base64,") == 4  # a poster frame per clip
    for stem in ("lamp-glow", "mug-turntable", "orb-watermarked", "sneaker-to-orb"):
        assert (out / "example" / f"{stem}.mp4").as_uri() in page
    assert "embedded-simulator" not in page  # the embedded provider's key
    assert "4 delivered" in page
