"""`seedq run manifests/example.yaml --budget 1.0` with no configuration (embedded mode):
the jobs that fit inside the budget are delivered before the run reports its pause, and
the summary says what was spent and how many jobs wait for more budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, seedq_cli


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_embedded_run_delivers_what_its_budget_covers(
    tmp_path: Path, no_config_env: dict[str, str]
) -> None:
    out = tmp_path / "videos"
    done = seedq_cli(
        "run",
        str(REPO / "manifests/example.yaml"),
        "--out",
        str(out),
        "--budget",
        "1.0",
        env=no_config_env,
        cwd=tmp_path,
        timeout=200,
    )
    text = done.stdout + done.stderr
    # 0.384 + 0.384 fit in 1.0; the next job (0.48) would not: two delivered, two wait.
    assert done.returncode == 1, text  # not every job was delivered
    assert "2 registered, 2 delivered" in done.stdout, text
    assert "budget: spent 0.77 of 1.00; 2 job(s) wait for more budget" in done.stdout, text
    assert "run paused: budget:" in done.stderr, text
    assert "Traceback" not in done.stderr
    videos = sorted(v.stem for v in (out / "example").glob("*.mp4"))
    assert videos == ["lamp-glow", "mug-turntable"]
    for stem in videos:
        sidecar = json.loads((out / "example" / f"{stem}.json").read_text())
        assert sidecar["job_id"] == stem
