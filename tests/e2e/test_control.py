"""Run control end to end, with real `celery worker` processes, a real Redis, the
simulator over HTTP and moto's S3: pause a run mid-way (nothing new reaches the
provider, what was started delivers), resume it (everything delivers), cancel another
(generations cancelled at the provider), retry a failed job, and report a run."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seedq import keys
from simulator.server import serve_directory
from tests.e2e.cluster import clip_rows

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(240)]
Manifest = Callable[[Path, list[dict[str, str]]], Path]
FAST = {"SEEDQ_SUBMIT_RATE": "50/s", "SEEDQ_POLL_RATE": "50/s", "SEEDQ_MAX_IN_FLIGHT": "2"}
AT_PROVIDER = ("submitting", "submitted", "generated")
WAIT_S = 90.0


def submit(c: Any, path: Path) -> str:
    done = c.seedq("submit", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    return str(done.stdout.strip().splitlines()[-1])


def states(c: Any, run_id: str) -> dict[str, str]:
    ids = [v.decode() for v in c.store.lrange(keys.run_jobs(run_id), 0, -1)]
    return {j: (c.store.hget(keys.job(j), "state") or b"?").decode() for j in ids}


def wait_for(c: Any, what: str, predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not reached\n{c.logs()[-4000:]}"
        time.sleep(0.2)


def ok(done: Any) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return str(done.stdout)


def test_pause_resume_cancel_retry_and_report(
    cluster: Any, manifest: Manifest, tmp_path: Path
) -> None:
    c = cluster(workers=0, latency_s=(2.0, 2.5))
    c.env.update(FAST)
    c.start_worker()
    c.start_worker()
    first = tmp_path / "first"
    first.mkdir()
    run_id = submit(c, manifest(first, clip_rows("p", 8)))
    wait_for(c, "a generation", lambda: "submitted" in states(c, run_id).values())

    paused = ok(c.seedq("pause", run_id))
    assert "paused" in paused
    # Generations started before the pause finish and deliver...
    wait_for(
        c,
        "the started ones to end",
        lambda: not set(AT_PROVIDER) & set(states(c, run_id).values()),
    )
    enqueued = c.sim.stats()["enqueued"]
    time.sleep(3.0)  # a few ticks: admission must skip the paused run
    # ...and nothing new reaches the provider.
    assert c.sim.stats()["enqueued"] == enqueued
    left = [j for j, s in states(c, run_id).items() if s == "registered"]
    assert left, states(c, run_id)
    listed = json.loads(ok(c.seedq("runs", "--json")))
    assert any(r["id"] == run_id and r["status"] == "paused" for r in listed)

    ok(c.seedq("resume", run_id))
    wait_for(c, "all delivered", lambda: set(states(c, run_id).values()) == {"delivered"})
    assert c.sim.stats()["enqueued"] == 8 and c.sim.stats()["duplicate_enqueues"] == 0

    # Cancel a second run while generations are at the provider: slow ones, so they are
    # still there when the command (a new process, slow on a loaded machine) arrives.
    c.sim.configure(latency_s=(30.0, 30.0))
    second = tmp_path / "second"
    second.mkdir()
    other = submit(c, manifest(second, clip_rows("c", 6)))
    wait_for(c, "a generation", lambda: "submitted" in states(c, other).values())
    cancelled = ok(c.seedq("cancel", other))
    assert "cancelled" in cancelled
    wait_for(
        c,
        "the cancelled run to settle",
        lambda: set(states(c, other).values()) <= {"cancelled", "delivered"},
    )
    assert "cancelled" in states(c, other).values()
    assert c.sim.stats()["by_status"]["cancelled"] >= 1
    time.sleep(2.0)
    enqueued = c.sim.stats()["enqueued"]
    time.sleep(2.0)
    assert c.sim.stats()["enqueued"] == enqueued  # nothing of it starts any more
    c.sim.configure(latency_s=(2.0, 2.5))

    # A job the provider fails (a face in the image), retried: a fresh attempt.
    third = tmp_path / "third"
    third.mkdir()
    manifest(third, [])  # writes the images
    with serve_directory(third / "images") as base:
        failing = submit(c, manifest(third, clip_rows("f", 1, image=f"{base}/face-photo.png")))
        wait_for(c, "the failure", lambda: states(c, failing) == {"f-0": "failed"})
        before = c.sim.stats()["enqueued"]
        retried = ok(c.seedq("retry", failing))
        assert "fresh attempt" in retried
        wait_for(c, "a second enqueue", lambda: c.sim.stats()["enqueued"] == before + 1)
        wait_for(c, "the second failure", lambda: states(c, failing) == {"f-0": "failed"})

    report = tmp_path / "report.html"
    ok(c.seedq("report", run_id, "--format", "html", "--out", str(report)))
    page = report.read_text(encoding="utf-8")
    assert page.count("data:image/jpeg;base64,") == 8  # a poster per clip, from S3
    assert "X-Amz-Signature" in page or "Signature=" in page  # presigned player links
    lines = ok(c.seedq("report", run_id, "--format", "jsonl")).splitlines()
    assert len(lines) == 8 and all(json.loads(x)["status"] == "delivered" for x in lines)
    assert "Signature" not in "".join(lines) and c.env["OXEN_API_KEY"] not in "".join(lines)
