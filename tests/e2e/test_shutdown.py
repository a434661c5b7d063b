"""Graceful shutdown end to end, with real processes: `celery worker` processes stopped
as Kubernetes or docker-compose stops them (SIGTERM, then SIGQUIT for a cold shutdown)
in the middle of a delivery and of a submit, while they hold messages waiting out an
ETA (throttled submits) and their replacements start; `celery beat`, `seedq events`
and `seedq exporter` stopped with SIGTERM; a paid `seedq run` on one machine stopped
with SIGTERM, then resumed.

What a stop must cost is nothing but the step it interrupts: every job delivered, no
duplicate enqueue, what the stopped worker held handed back to the broker (not left to
its heartbeat's lapse, nor to the 300 s lease, nor to the 6 h visibility timeout).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from seedq import keys
from simulator.config import SimConfig
from simulator.server import SimHandle, running_simulator
from tests.e2e.cluster import assert_every_job_accounted, clip_rows
from tests.e2e.processes import REPO, free_port, kill, seedq_background, seedq_cli, wait_until
from tests.e2e.test_local_paid_run import API_KEY, clips, pid_alive, serving_images
from tests.e2e.test_local_paid_run import write_manifest as write_local_manifest

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(180)]
Manifest = Callable[[Path, list[dict[str, str]]], Path]

JOBS = 20
DOWNLOAD_S = 4.0  # each delivery: long enough to be stopped in the middle of
# The default lease (300 s) and heartbeat (10 s) are left alone: a job that waited for
# either would blow the bound below. A throttled submit rate keeps submits waiting out
# an ETA in the workers' hands.
SHUTDOWN_ENV = {"SEEDQ_SUBMIT_RATE": "4/s", "SEEDQ_POLL_RATE": "50/s", "SEEDQ_MAX_IN_FLIGHT": "8"}
SETTLE_S = 90.0  # far below the lease: no job waited for one
WARM_EXIT_S = DOWNLOAD_S + 20  # the delivery it runs, then the hand-over
COLD_EXIT_S = 15.0
_SWEEP = re.compile(r'GET \S+/api/ai/queue "')  # the tick's list call (not a job's GET)
_STOPPED_BEATING = "stopped beating"  # worker.ticker: a process reaped, its jobs re-driven
_LEFT_TO_TICK = "could not hand back"  # worker.heartbeat: a stop that left jobs to the tick


def wait_for(
    c: Any, ids: list[str], what: str, check: Callable[[], bool], timeout_s: float
) -> None:
    """Wait until ``check`` holds; a timeout shows the jobs not delivered and the tail
    of the workers' logs."""
    wait_until(
        check,
        timeout_s,
        what,
        detail=lambda: f"{c.unsettled(ids)}\n{c.logs()[-4000:]}",
        interval_s=0.05,
    )


def worker_holding(c: Any, task: str, but: int | None = None) -> int | None:
    """A live worker (its index; not ``but``, stopping) that has received a ``task``
    message and not finished it."""
    for n, proc in enumerate(c.workers):
        if n != but and proc.poll() is None and task in c.holding(n):
            return n
    return None


def log_of(c: Any, n: int) -> str:
    return str((c.folder / f"worker-{n}.log").read_text(errors="replace"))


def after_shutdown_began(log: str) -> str:
    """What a worker logged once its shutdown began."""
    _, _, rest = log.partition("shutdown (MainProcess)")
    return rest


def test_workers_stopped_mid_delivery_and_mid_submit_lose_nothing_and_wait_for_nothing(
    cluster: Any, manifest: Manifest, tmp_path: Path
) -> None:
    c = cluster(env=SHUTDOWN_ENV, latency_s=(0.5, 1.0), download_s=DOWNLOAD_S)
    rows = clip_rows("stop", JOBS)
    folder = tmp_path / "stop"
    folder.mkdir()
    started = time.monotonic()
    done = c.seedq("submit", str(manifest(folder, rows)), "--name", "stop", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    ids = [r["id"] for r in rows]

    # A warm shutdown in the middle of a delivery: the delivery finishes, what else the
    # worker holds goes back to the broker, and it leaves.
    wait_for(
        c, ids, "a worker delivering", lambda: worker_holding(c, "seedq.deliver") is not None, 60
    )
    warm = worker_holding(c, "seedq.deliver")
    assert warm is not None
    c.workers[warm].send_signal(signal.SIGTERM)
    c.start_worker()  # its replacement, as a Deployment's controller starts one

    # A cold shutdown (SIGTERM, then SIGQUIT) in the middle of a submit: the submit is
    # abandoned where it is, and its job reconciled by another worker, never paid twice.
    c.sim.configure(slow_rate=1.0, slow_delay_s=1.0)  # every answer late: submits in hand
    try:
        wait_for(
            c,
            ids,
            "a worker submitting",
            lambda: worker_holding(c, "seedq.submit", but=warm) is not None,
            60,
        )
        cold = worker_holding(c, "seedq.submit", but=warm)
        assert cold is not None and cold != warm
        c.workers[cold].send_signal(signal.SIGTERM)
        time.sleep(0.3)
        c.workers[cold].send_signal(signal.SIGQUIT)
        c.start_worker()
        c.workers[cold].wait(COLD_EXIT_S)
    finally:
        c.sim.configure(slow_rate=0.0)
    assert c.workers[warm].wait(WARM_EXIT_S) == 0, log_of(c, warm)[-4000:]

    c.wait_settled(ids, SETTLE_S)
    took_s = time.monotonic() - started
    assert_every_job_accounted(c, ids)  # all delivered, no duplicate enqueue
    logs = c.logs()
    # Everything the stopped workers held went back to the broker or was finished: none
    # was left to a heartbeat's lapse (the fallback), and none waited for a lease.
    assert _STOPPED_BEATING not in logs and _LEFT_TO_TICK not in logs
    assert took_s < SETTLE_S
    assert c.store.smembers(keys.WORKERS) == {
        w for w in c.store.smembers(keys.WORKERS) if c.store.exists(keys.worker_alive(w.decode()))
    }, "a stopped worker is still entered as one"
    warm_log = log_of(c, warm)
    assert "Task seedq.deliver[" in after_shutdown_began(warm_log), "its delivery did not finish"
    # A draining worker ticks no more: nobody consumes its queues here any longer.
    assert not _SWEEP.search(after_shutdown_began(warm_log)), "it kept sweeping while it drained"
    print(f"{JOBS} jobs, two workers stopped: settled in {took_s:.1f} s")


def stops_cleanly(proc: subprocess.Popen[Any], ready: Callable[[], bool], timeout_s: float) -> int:
    """Wait for ``ready``, send SIGTERM, and return the exit status (within ``timeout_s``)."""
    wait_until(ready, 60, "ready", proc=proc)
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout_s)


def test_beat_events_and_exporter_exit_cleanly_on_sigterm(cluster: Any, tmp_path: Path) -> None:
    import httpx

    c = cluster(workers=0)
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(
        "schedules:\n  - name: nightly\n    cron: '0 3 * * *'\n    manifest: m.csv\n",
        encoding="utf-8",
    )
    env = {**c.env, "SEEDQ_SCHEDULES": str(schedules)}
    port = free_port()
    logs = {name: (tmp_path / f"{name}.log").open("w+b") for name in ("beat", "events", "exporter")}
    procs = {
        "beat": subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "beat", "-l", "INFO",
             "-s", str(tmp_path / "celerybeat-schedule")],
            env=env, cwd=REPO, stdout=logs["beat"], stderr=subprocess.STDOUT,
        ),
        "events": subprocess.Popen(
            [sys.executable, "-m", "cli.main", "events"],
            env=env, cwd=tmp_path, stdout=logs["events"], stderr=subprocess.STDOUT,
        ),
        "exporter": subprocess.Popen(
            [sys.executable, "-m", "cli.main", "exporter", "--port", str(port)],
            env=env, cwd=tmp_path, stdout=logs["exporter"], stderr=subprocess.STDOUT,
        ),
    }  # fmt: skip

    def said(name: str, text: str) -> Callable[[], bool]:
        return lambda: text in (tmp_path / f"{name}.log").read_text(errors="replace")

    def serving() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        status = {
            "beat": stops_cleanly(procs["beat"], said("beat", "beat: Starting"), 15),
            "events": stops_cleanly(procs["events"], said("events", "listening"), 15),
            "exporter": stops_cleanly(procs["exporter"], serving, 15),
        }
    finally:
        for proc in procs.values():
            kill(proc)
        for f in logs.values():
            f.close()
    out = {n: (tmp_path / f"{n}.log").read_text(errors="replace")[-2000:] for n in procs}
    assert status == {"beat": 0, "events": 0, "exporter": 0}, out
    assert "stopped; 0 completion(s) handed to delivery" in out["events"], out["events"]


@pytest.fixture
def provider() -> Iterator[SimHandle]:
    """The provider of a paid local run (test_local_paid_run's)."""
    config = SimConfig(api_key=API_KEY, latency_s=(3.0, 4.0), max_concurrency=2, keepalive_s=1.0)
    with running_simulator(config) as sim:
        yield sim


@pytest.fixture
def paid_env(no_config_env: dict[str, str], provider: SimHandle) -> dict[str, str]:
    return {
        **no_config_env,
        "OXEN_API_KEY": API_KEY,
        "SEEDQ_PROVIDER_URL": provider.url,
        "SEEDQ_ALLOW_PRIVATE_URLS": "true",  # the stand-in provider is on loopback
        "SEEDQ_POLL_INTERVAL_S": "1",
    }


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")
def test_a_local_run_stopped_with_sigterm_says_so_and_resumes_paying_nothing_twice(
    tmp_path: Path, paid_env: dict[str, str], provider: SimHandle
) -> None:
    """`seedq run` on one machine, stopped as `docker stop` or a CI timeout stops it: as
    Ctrl-C does, it says so, stops its private redis-server, exits 130, and the same
    command resumes the run."""
    with serving_images() as images:
        _stopped_then_resumed(tmp_path, paid_env, provider, images)


def _stopped_then_resumed(
    tmp_path: Path, paid_env: dict[str, str], provider: SimHandle, images: str
) -> None:
    manifest = write_local_manifest(tmp_path / "clips.csv", images, 4)
    out = tmp_path / "out"
    first = seedq_background("run", str(manifest), "--out", str(out), env=paid_env, cwd=tmp_path)
    try:
        wait_until(lambda: provider.stats()["enqueued"] >= 1, 120, "an enqueue", proc=first)
        redis_pid = int((out / ".seedq" / "redis.pid").read_text())
        first.send_signal(signal.SIGTERM)
        said, _ = first.communicate(timeout=60)
    finally:
        kill(first)
    assert first.returncode == 130, said
    assert "stopping; the same command resumes this run" in said and "interrupted" in said
    assert not pid_alive(redis_pid), "its redis-server was left running"

    again = seedq_cli("run", str(manifest), "--out", str(out), env=paid_env, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming run" in again.stdout
    assert clips(out) == [f"clip-{i}" for i in range(4)]
    stats = provider.stats()
    assert stats["duplicate_enqueues"] == 0 and stats["enqueued"] == 4
