"""``seedq exporter`` as a real process: it serves the backlog of the real Redis over
HTTP on the port it is given, on loopback unless told otherwise; it outlives a Redis
outage (``seedq_up 0``, then 1 again); and it refuses to start, in one line, without a
Redis that answers or a port it can take."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from seedq.store import JobStore
from tests.e2e.processes import RedisProcess, free_port, listening, seedq_cli, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def exporter_env(tmp_path: Path, redis_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDQ_")}
    env["HOME"] = str(tmp_path)
    if redis_url is not None:
        env["SEEDQ_REDIS_URL"] = redis_url
    return env


def run_exporter(
    tmp_path: Path, redis_url: str | None, *args: str
) -> subprocess.CompletedProcess[str]:
    """The exporter run to its end (it only ends by itself when it cannot start)."""
    env = exporter_env(tmp_path, redis_url)
    return seedq_cli("exporter", *args, env=env, cwd=tmp_path, timeout=60)


@contextmanager
def exporter(tmp_path: Path, redis_url: str, port: int) -> Iterator[subprocess.Popen[str]]:
    """A running exporter on ``port``; stopped with SIGTERM, which must end it with 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "exporter", "--port", str(port)],
        env=exporter_env(tmp_path, redis_url),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: listening("127.0.0.1", port), 60, "the exporter listening", proc=proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert (
        err.splitlines()[0] == f"serving metrics on http://127.0.0.1:{port}/metrics (Ctrl-C stops)"
    )
    assert "Traceback" not in out + err


def scrape(port: int) -> Samples:
    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


@pytest.mark.redis
def test_it_serves_the_backlog_of_the_real_redis(
    tmp_path: Path, real_redis: redis.Redis, real_redis_url: str
) -> None:
    store = JobStore(real_redis)
    store.create_run("r-e2e", "catalog", {})
    jobs = [(f"e2e-{n}", f"fp{n}", {"priority": 0}) for n in range(7)]
    for _ in store.register("r-e2e", jobs):
        pass
    store.set_run_status("r-e2e", "active")
    port = free_port()
    with exporter(tmp_path, real_redis_url, port):
        got = scrape(port)
        # 127.0.0.1 only, by default: on Linux all of 127/8 reaches this host, and a
        # server bound to every address (0.0.0.0) would answer on 127.0.0.2 too.
        with pytest.raises(OSError), socket.create_connection(("127.0.0.2", port), 0.5):
            pass
    assert got[("seedq_up", ())] == 1
    assert got[("seedq_backlog_jobs", ())] == 7
    assert got[("seedq_backlog_jobs_by_run", (("run_id", "r-e2e"), ("run_name", "catalog")))] == 7
    assert got[("seedq_queue_demand_jobs", (("queue", "submit"),))] == 7
    assert got[("seedq_jobs", (("run_id", "r-e2e"), ("state", "registered")))] == 7
    assert got[("seedq_breaker_open", (("throttle", "submit"),))] == 0


def test_a_redis_outage_is_seedq_up_0_not_a_crash(
    tmp_path: Path, dedicated_redis: RedisProcess
) -> None:
    port = free_port()
    with exporter(tmp_path, dedicated_redis.url, port) as proc:
        assert scrape(port)[("seedq_up", ())] == 1
        dedicated_redis.stop()
        assert scrape(port) == {("seedq_up", ()): 0}
        assert proc.poll() is None
        dedicated_redis.start()
        assert scrape(port)[("seedq_up", ())] == 1


def test_it_refuses_to_start_without_redis_in_one_line(tmp_path: Path) -> None:
    unset = run_exporter(tmp_path, None)
    assert unset.returncode == 2, unset.stderr
    assert unset.stderr.strip() == (
        "error: SEEDQ_REDIS_URL is not set: seedq exporter cannot start without it"
    )
    closed = run_exporter(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    assert closed.returncode == 3, closed.stderr
    [line] = closed.stderr.strip().splitlines()
    assert line.startswith("error: Redis is unreachable (SEEDQ_REDIS_URL)"), line


@pytest.mark.redis
def test_it_refuses_a_port_it_cannot_take_in_one_line(
    tmp_path: Path, real_redis: redis.Redis, real_redis_url: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_exporter(tmp_path, real_redis_url, "--port", str(port))
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: seedq exporter cannot listen on 127.0.0.1:{port}: "), line
