"""`seedq run --report FILE` in embedded mode: the HTML report is written before the
process (and with it the run's state) ends."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.processes import REPO, seedq_cli


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


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_embedded_run_prints_keys_and_names_as_written(
    tmp_path: Path, no_config_env: dict[str, str]
) -> None:
    """An output key and a run name that look like rich markup are printed as written:
    ``[/x]`` closes nothing (it used to end the run with a MarkupError before the report
    was written)."""
    Image.new("RGB", (64, 48), (200, 100, 50)).save(tmp_path / "cat.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "prompt,input_image,duration,resolution,output\na cat,cat.png,4,480p,clip[/x].mp4\n",
        encoding="utf-8",
    )
    report = tmp_path / "run.html"
    args = ["run", "--demo", str(manifest), "--out", str(tmp_path / "videos")]
    args += ["--name", "[link=http://x]y[/link]", "--report", str(report)]
    done = seedq_cli(*args, env=no_config_env, cwd=tmp_path, timeout=200)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "clip[/x].mp4" in done.stdout and "[link=http://x]y[/link]" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert "1 delivered" in report.read_text(encoding="utf-8")
