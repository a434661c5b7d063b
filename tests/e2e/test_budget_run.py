"""`seedq run manifests/example.yaml --budget 1.0` with no configuration (embedded mode):
the jobs that fit inside the budget are delivered before the run reports its pause, and
the summary says what was spent and how many jobs wait for more budget. A paid run on
one machine (OXEN_API_KEY, the simulator as provider) takes more budget by running the
same command again with a higher --budget: it resumes and delivers the rest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from simulator.config import SimConfig
from simulator.server import running_simulator
from tests.e2e.processes import REPO, seedq_cli


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


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")
def test_a_paid_local_run_goes_on_with_a_higher_budget(
    tmp_path: Path, no_config_env: dict[str, str]
) -> None:
    key = "sk-budget-run-0123456789"
    out = tmp_path / "videos"
    args = ("run", str(REPO / "manifests/example.yaml"), "--out", str(out), "--budget")
    with running_simulator(SimConfig(api_key=key, latency_s=(1.0, 2.0))) as sim:
        env = no_config_env | {
            "OXEN_API_KEY": key,
            "SEEDQ_PROVIDER_URL": sim.url,
            "SEEDQ_ALLOW_PRIVATE_URLS": "true",  # the simulator fetches the local images
        }
        first = seedq_cli(*args, "1.0", env=env, cwd=tmp_path, timeout=200)
        text = first.stdout + first.stderr
        assert first.returncode == 1, text
        assert "2 registered, 2 delivered" in first.stdout, text
        assert "run the same command again with a higher --budget" in first.stdout, text

        again = seedq_cli(*args, "2.0", env=env, cwd=tmp_path, timeout=200)
        text = again.stdout + again.stderr
        assert again.returncode == 0, text
        assert "resuming run" in again.stdout, text
        assert "4 delivered" in again.stdout and "budget: spent 1.63 of 2.00" in again.stdout
        stats = sim.stats()
        assert stats["enqueued"] == 4 and stats["duplicate_enqueues"] == 0  # none paid twice
    assert len(list((out / "example").glob("*.mp4"))) == 4
