"""The benches' machinery, apart from what each measures: the catalog CSV they submit,
the Redis they need, the simulator they run against, Celery worker processes and the
events listener started, awaited and stopped, the CPU clocks they read (children, this
process, the Redis server), the sampler of the broker's peak of messages, and the
figures of a whole run beside its lower bound."""

from __future__ import annotations

import csv
import json
import math
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from simulator.config import SimConfig

REPO = Path(__file__).resolve().parents[1]
QUEUES = ("seedq.submit", "seedq.track", "seedq.deliver", "celery")


def write_catalog(
    path: Path,
    rows: int,
    image: Callable[[int], str],
    *,
    resolutions: Sequence[str],
    durations_s: Sequence[int],
) -> None:
    """A shop's catalog CSV of ``rows`` SKUs: a product name, ``image(i)`` as row ``i``'s
    input image, the resolutions and the durations in turn, every fifth with audio."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(
            ["sku", "product_name", "input_image", "resolution", "duration", "generate_audio"]
        )
        for i in range(rows):
            out.writerow(
                [
                    f"SKU-{i:07d}",
                    f"product number {i}",
                    image(i),
                    resolutions[i % len(resolutions)],
                    durations_s[i % len(durations_s)],
                    "yes" if i % 5 == 0 else "no",
                ]
            )


def connect(url: str) -> redis.Redis | None:
    """A client of the bench's Redis; None when none answers, said on stdout in the
    bench's JSON."""
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError:
        print(json.dumps({"error": f"no Redis at {url}"}))
        return None
    return client


def simulator_config(*, cap: int, latency_s: float) -> SimConfig:
    """The simulator a pipeline runs against: cached clips, a fixed latency, room for
    ten times the cap, so that it is never the bottleneck."""
    return SimConfig(
        fast=True,
        latency_s=(latency_s, latency_s),
        max_concurrency=cap * 10,
        keepalive_s=5.0,
        seed=1,
    )


def child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def redis_cpu_s(client: redis.Redis) -> float:
    """The Redis server's CPU so far (it serves the broker and the job store)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def own_cpu_s() -> float:
    """This process: the simulator's threads, the producer's registering, the samplers."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class PeakSampler:
    """Samples the number of messages held by the broker (ready + unacked)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client, self.peak, self._stop = client, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with self.client.pipeline(transaction=False) as pipe:
                for q in QUEUES:
                    pipe.llen(q)
                pipe.hlen("unacked")
                self.peak = max(self.peak, sum(int(v) for v in pipe.execute()))

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def process_cpu_s(pids: list[int]) -> float:
    """CPU so far of these live processes (all their threads), from /proc: what a
    process still running has used, which ``RUSAGE_CHILDREN`` only counts once it has
    been waited for."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        # The fields after the command's ")" (which may hold spaces): utime, stime are
        # the 12th and 13th of them.
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


def start_workers(
    app_module: str,
    env: dict[str, str],
    n: int,
    threads: int,
    log: Path,
    queues: str | None = None,
) -> list[subprocess.Popen[bytes]]:
    """``n`` worker processes of ``threads`` threads, on every queue or on ``queues``
    (comma-separated, as ``celery worker -Q`` takes them)."""
    procs = []
    only = ["-Q", queues] if queues else []
    for i in range(n):
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    app_module,
                    "worker",
                    "-P",
                    "threads",
                    "-c",
                    str(threads),
                    "-n",
                    f"bench{i}-{queues or app_module}@%h",
                    "-l",
                    "WARNING",
                    "--without-mingle",
                    "--without-gossip",
                    *only,
                ],
                env=env,
                cwd=REPO,
                stdout=log.open("ab"),
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def start_events_listener(env: dict[str, str], folder: Path) -> subprocess.Popen[bytes]:
    """The completion-events listener, as deployed beside the workers."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "events"],
        env=env,
        cwd=REPO,
        stdout=(folder / "events.log").open("ab"),
        stderr=subprocess.STDOUT,
    )


def wait_ready(app: Any, n: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while len(app.control.ping(timeout=0.5) or []) < n:
        if time.monotonic() > deadline:
            raise SystemExit("workers did not start; see the bench log")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_until(done: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit("the run did not finish in time")
        time.sleep(0.05)


def run_figures(
    makespan_s: float, *, jobs: int, rate_per_s: float, cap: int, latency_s: float, digits: int
) -> dict[str, float]:
    """A whole run's makespan beside its lower bound max(N/R, ceil(N/C)·L), which no
    pipeline beats: the submit rate's floor, or the cap's with every slot held for the
    provider's latency. Seconds and jobs/s to ``digits`` places."""
    bound_s = max(jobs / rate_per_s, math.ceil(jobs / cap) * latency_s)
    return {
        "makespan_s": round(makespan_s, digits),
        "lower_bound_s": round(bound_s, digits),
        "ratio_to_bound": round(makespan_s / bound_s, 3),
        "jobs_per_s": round(jobs / makespan_s, digits),
    }
