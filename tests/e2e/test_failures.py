"""Failure paths end to end, with real workers: a failed generation, an expired result
URL, the provider down for a while, and a run-fatal error."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seedq import keys
from simulator.server import serve_directory

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(300)]
Manifest = Callable[[Path, list[dict[str, str]]], Path]


def rows(n: int, image: str = "images/red.png") -> list[dict[str, str]]:
    return [
        {
            "id": f"job-{i}",
            "prompt": f"clip {i}",
            "input_image": image,
            "duration": "4",
            "resolution": "480p",
        }
        for i in range(n)
    ]


def states(c: Any, n: int) -> dict[str, str]:
    out = {}
    for i in range(n):
        raw = c.store.hget(keys.job(f"job-{i}"), "state")
        out[f"job-{i}"] = raw.decode() if raw else "?"
    return out


def wait_for(predicate: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def test_failed_generation_is_reported_others_delivered(
    cluster: Any, manifest: Manifest, tmp_path: Path
) -> None:
    c = cluster()
    manifest(tmp_path, [])  # writes the images
    with serve_directory(tmp_path / "images") as base:
        jobs = rows(3, image=f"{base}/red.png")
        jobs[1]["input_image"] = f"{base}/face-photo.png"  # the content filter fails it
        path = manifest(tmp_path, jobs)
        done = c.seedq("run", str(path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert states(c, 3) == {"job-0": "delivered", "job-1": "failed", "job-2": "delivered"}, (
        done.stdout + done.stderr
    )
    error = c.store.hget(keys.job("job-1"), "error").decode()
    assert "content filter" in error.lower() or "face" in error.lower()
    assert "job-1" in done.stdout and "failed" in done.stdout


def test_expired_result_url_is_refreshed(cluster: Any, manifest: Manifest, tmp_path: Path) -> None:
    c = cluster(workers=0, url_ttl_s=1.0)
    c.start_worker("-Q", "seedq.submit,seedq.track")
    path = manifest(tmp_path, rows(3))
    run = c.seedq_background("run", str(path))
    try:
        wait_for(lambda: set(states(c, 3).values()) == {"generated"})
        time.sleep(1.5)  # every result URL has expired now
        c.start_worker("-Q", "seedq.deliver")
        output, _ = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 0, output + c.logs()[-3000:]
    assert set(states(c, 3).values()) == {"delivered"}
    for i in range(3):
        calls = int(c.store.hget(keys.job(f"job-{i}"), "provider_calls"))
        assert calls >= 4  # enqueue, >=1 status, expired download, refresh + download


def test_provider_down_for_a_while(cluster: Any, manifest: Manifest, tmp_path: Path) -> None:
    c = cluster(error_rate=1.0)
    path = manifest(tmp_path, rows(5))
    run = c.seedq_background("run", str(path))
    try:
        wait_for(lambda: c.sim.stats()["requests"].get("POST /api/ai/queue", 0) >= 5)
        time.sleep(1.0)
        c.sim.configure(error_rate=0.0)
        output, _ = run.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the run did not finish: {states(c, 5)}\n{c.logs()[-6000:]}")
    finally:
        run.kill()
    assert run.returncode == 0, output + c.logs()[-3000:]
    assert set(states(c, 5).values()) == {"delivered"}
    stats = c.sim.stats()
    assert stats["duplicate_enqueues"] == 0 and stats["enqueued"] == 5


def test_insufficient_credits_pauses_the_run(
    cluster: Any, manifest: Manifest, tmp_path: Path
) -> None:
    c = cluster(insufficient_credits=True)
    done = c.seedq("run", str(manifest(tmp_path, rows(4))), timeout=120)
    assert done.returncode == 1
    assert "run paused" in done.stderr and "nsufficient credits" in done.stderr
    assert set(states(c, 4).values()) == {"registered"}  # nothing lost, nothing paid
    assert c.sim.stats()["enqueued"] == 0
