"""The 100,000-clip night, measured: the producer, the run, Redis and the broker.

    python bench/scale.py [--jobs 1000] [--cap 100] [--rate 10] [--latency 1]
                          [--per-queue 1 | --workers 2] [--baseline REV | none]
                          [--redis-url redis://127.0.0.1:6379/13]

1. The producer, alone (no workers yet): ``--jobs`` rows of a catalog CSV (SKU, product
   name, image URL, resolution, duration, audio; prompt and output from templates, as
   ``seedq submit --set`` fills them) validated, spooled and registered in a fresh
   process, as ``seedq submit`` does: seconds of each pass, rows/s, and the growth of
   the process's peak RSS, at a tenth of the rows and at all of them (flat memory: the
   same at both). Beside it, the same code of git revision ``--baseline`` (exported to
   a temporary folder with ``git archive``): the producer before its speed-up.
2. The night: worker processes (one per queue and ``--per-queue`` of each, as the
   Compose stack runs them: submit -c 8, track -c 8, deliver -c 4; or ``--workers K``
   processes on every queue, -c 8) and ``seedq events``, against the simulator in its
   fast mode (cached clips, latency ``--latency`` s, room for ten times the cap), in
   this process. The producer submits the same manifest (in its own process), and the
   clock runs until every job has ended: the makespan against the lower bound
   max(N/R, ceil(N/C)·L), as ``bench/throughput.py`` reports it (``bench/harness.py``).

It prints a table and the same figures as JSON (``--json``): worker CPU per job (the
worker processes and the listener, from /proc), Redis CPU per job, the peak of messages
in the broker (ready + unacked, sampled every 0.1 s), the Redis server's ``used_memory``
at its peak over its value before the run (server-wide: other databases of a shared
server count too), and the bytes seedq's keys take per job (``MEMORY USAGE`` of every key
of the database, exact) when the producer is done, when the run has ended, and once the
run is archived and its delivered jobs compacted (``worker.retention.archive_run``,
which retention runs after a run ends; bills the simulator never sends are given up
first, as the biller does after its deadline).

Needs a Redis (``--redis-url``, by default database 13 on 127.0.0.1:6379), whose database
it FLUSHES before and after: never point it at one that holds anything.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
# The revision before the producer's speed-up (batched registration, checks cached).
DEFAULT_BASELINE = "b7fbba9"
MODEL = "bytedance-seedance-2-0-image-to-video"
KEY = "bench-key"
SETS = {"prompt": "A slow turntable of {product_name}", "output": "catalog/{sku}.mp4"}
# As docker-compose.yml runs them: queue -> threads per process.
COMPOSE_QUEUES = {"seedq.submit": 8, "seedq.track": 8, "seedq.deliver": 4}
MIB = 1024 * 1024


def write_manifest(path: Path, rows: int) -> None:
    """A catalog: one image URL per SKU (never fetched: the simulator's fast mode does not
    read it), mixed resolutions and durations, every fifth with audio."""
    from bench.harness import write_catalog

    write_catalog(
        path,
        rows,
        lambda i: f"http://127.0.0.1:9/img/SKU-{i:07d}.png",
        resolutions=("480p", "720p"),
        durations_s=range(4, 8),
    )


# -- the producer, in its own process --------------------------------------------------


def peak_rss_kib() -> int:
    """This process's peak resident memory since its exec (``VmHWM``): ``ru_maxrss``
    would count the parent's, copied by the fork, when the parent is the larger."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def producer_child(source: str, manifest: str, redis_url: str, out: str) -> None:
    """Validate and register ``manifest`` with the code under ``source``, sending what
    the cap admits at once to the broker; writes its figures to ``out`` as JSON."""
    # This script's folder holds bench/producer.py, which would shadow the package.
    sys.path[:] = [source, *(p for p in sys.path if Path(p or ".").resolve() != REPO / "bench")]
    from producer.manifest import ReadOptions
    from producer.plan import check
    from producer.spool import Spool
    from producer.submit import submit
    from seedq.admission import admission_for
    from seedq.catalog import ModelCatalog
    from seedq.dispatch import celery_sender
    from seedq.queueing import make_celery
    from seedq.settings import Settings
    from seedq.store import JobStore

    settings = Settings(broker_url=redis_url, redis_url=redis_url)
    app = make_celery(settings)
    store = JobStore(redis.Redis.from_url(redis_url))
    opts = ReadOptions(default_model=MODEL, sets=dict(SETS), allow_private_urls=True)
    start_rss = peak_rss_kib()
    cpu0 = time.process_time()
    with Spool() as spool:
        started = time.perf_counter()
        checked = check(
            [Path(manifest)], opts, ModelCatalog(), auto_estimate_s=10, on_job=spool.write
        )
        validated = time.perf_counter()
        if checked.errors:
            raise SystemExit(f"the bench's manifest is invalid: {checked.errors[0]}")
        done = submit(
            spool,
            store,
            celery_sender(app),
            admission=admission_for(store, settings),
            name="scale",
            manifests=[manifest],
        )
        registered = time.perf_counter()
    figures = {
        "validate_s": validated - started,
        "register_s": registered - validated,
        "cpu_s": time.process_time() - cpu0,
        "peak_rss_growth_mib": (peak_rss_kib() - start_rss) / 1024,
        "peak_rss_mib": peak_rss_kib() / 1024,
        "enqueued": done.enqueued,
        "run_id": done.run_id,
    }
    app.close()
    Path(out).write_text(json.dumps(figures))


def start_producer(
    source: Path, manifest: Path, redis_url: str, out: Path
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--producer-child",
            str(source),
            str(manifest),
            redis_url,
            str(out),
        ],
        cwd=source,
        env={**os.environ, "PYTHONPATH": str(source)},
    )


def run_producer(source: Path, manifest: Path, redis_url: str, folder: Path) -> dict[str, Any]:
    out = folder / "producer.json"
    out.unlink(missing_ok=True)
    proc = start_producer(source, manifest, redis_url, out)
    if proc.wait() != 0:
        raise SystemExit(f"the producer ({source}) failed")
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures


def producer_figures(rows: int, m: dict[str, Any]) -> dict[str, Any]:
    total = m["validate_s"] + m["register_s"]
    return {
        "rows": rows,
        "validate_s": round(m["validate_s"], 2),
        "register_s": round(m["register_s"], 2),
        "rows_per_s": round(rows / total),
        "cpu_rows_per_s": round(rows / m["cpu_s"]),
        "peak_rss_growth_mib": round(m["peak_rss_growth_mib"], 1),
        "peak_rss_mib": round(m["peak_rss_mib"], 1),
    }


def baseline_tree(rev: str, into: Path) -> Path | None:
    """The repository at ``rev``, exported to ``into``; None without git or the revision."""
    if not shutil.which("git"):
        return None
    into.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev], capture_output=True, check=False
    )
    if archive.returncode != 0:
        return None
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def measure_producer(args: argparse.Namespace, client: redis.Redis, folder: Path) -> dict[str, Any]:
    """The producer alone, now and at ``--baseline``, at a tenth of the rows and at all."""
    sizes = sorted({max(1, args.jobs // 10), args.jobs})
    sources = {"now": REPO}
    if args.baseline != "none":
        old = baseline_tree(args.baseline, folder / "baseline")
        if old is None:
            print(f"no baseline: git archive {args.baseline} failed", file=sys.stderr)
        else:
            sources[f"baseline ({args.baseline})"] = old
    report: dict[str, Any] = {}
    for rows in sizes:
        manifest = folder / f"catalog-{rows}.csv"
        write_manifest(manifest, rows)
        for name, source in sources.items():
            client.flushdb()
            report.setdefault(name, []).append(
                producer_figures(rows, run_producer(source, manifest, args.redis_url, folder))
            )
            client.flushdb()
    return report


# -- the night -------------------------------------------------------------------------


class Sampler:
    """Every 0.1 s: the messages the broker holds (ready + unacked) and the server's
    ``used_memory``; keeps the peaks."""

    def __init__(self, client: redis.Redis) -> None:
        from bench.harness import QUEUES

        self.client, self.queues = client, QUEUES
        self.peak_messages = 0
        self.memory_at_start = int(client.info("memory")["used_memory"])
        self.peak_memory = self.memory_at_start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with self.client.pipeline(transaction=False) as pipe:
                for q in self.queues:
                    pipe.llen(q)
                pipe.hlen("unacked")
                pipe.info("memory")
                *lengths, memory = pipe.execute()
            self.peak_messages = max(self.peak_messages, sum(int(n) for n in lengths))
            self.peak_memory = max(self.peak_memory, int(memory["used_memory"]))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def db_bytes(client: redis.Redis) -> tuple[int, int]:
    """(keys, bytes) of this database, as ``MEMORY USAGE`` counts each key."""
    count = total = 0
    batch: list[bytes] = []

    def flush() -> int:
        with client.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.memory_usage(key, samples=0)
            return sum(int(n or 0) for n in pipe.execute())

    for key in client.scan_iter(count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            total += flush()
            count += len(batch)
            batch = []
    if batch:
        total += flush()
        count += len(batch)
    return count, total


def worker_env(args: argparse.Namespace, sim_url: str, folder: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SEEDQ_BROKER_URL": args.redis_url,
        "SEEDQ_REDIS_URL": args.redis_url,
        "SEEDQ_PROVIDER_URL": sim_url,
        "OXEN_API_KEY": KEY,
        "SEEDQ_OUTPUT": str(folder / "out"),
        "SEEDQ_SUBMIT_RATE": f"{args.rate}/s",
        "SEEDQ_POLL_RATE": "200/s",
        "SEEDQ_MAX_IN_FLIGHT": str(args.cap),
        "SEEDQ_POLL_INTERVAL_S": "0.5",
        "SEEDQ_ALLOW_PRIVATE_URLS": "true",
        # The night's records stay until this bench archives them itself.
        "SEEDQ_RETENTION_DAYS": "0",
    }


def start_night_workers(
    args: argparse.Namespace, env: dict[str, str], folder: Path
) -> tuple[list[subprocess.Popen[bytes]], int]:
    """The worker processes and the events listener; how many answer a ping."""
    from bench.harness import start_events_listener, start_workers

    log = folder / "workers.log"
    procs: list[subprocess.Popen[bytes]] = []
    if args.workers:
        procs += start_workers("worker", env, args.workers, 8, log)
    else:
        for queue, threads in COMPOSE_QUEUES.items():
            procs += start_workers("worker", env, args.per_queue, threads, log, queues=queue)
    workers = len(procs)
    procs.append(start_events_listener(env, folder))
    return procs, workers


def ended(client: redis.Redis, run_id: str) -> int:
    from seedq import keys

    counts = client.hmget(keys.run_counts(run_id), "delivered", "failed")
    return sum(int(n or 0) for n in counts)


def archive(client: redis.Redis, run_id: str, folder: Path) -> float:
    """Give up the bills still awaited, then archive the run as retention would: its
    delivered jobs compacted. Seconds it took."""
    from seedq.store import JobStore
    from storage.local import LocalStorage
    from worker.retention import archive_run

    store = JobStore(client)
    started = time.monotonic()
    for job_id in store.run_job_ids(run_id):
        store.billing.give_up(job_id, run_id)
    archive_run(store, LocalStorage(folder / "out"), run_id, now_s=time.time())
    return time.monotonic() - started


def run_night(args: argparse.Namespace, client: redis.Redis, folder: Path) -> dict[str, Any]:
    from bench.harness import (
        process_cpu_s,
        redis_cpu_s,
        run_figures,
        simulator_config,
        stop,
        wait_ready,
    )
    from seedq.queueing import make_celery
    from seedq.settings import Settings
    from simulator.server import running_simulator

    manifest = folder / f"catalog-{args.jobs}.csv"
    if not manifest.exists():
        write_manifest(manifest, args.jobs)
    client.flushdb()
    sim_config = simulator_config(cap=args.cap, latency_s=args.latency)
    app = make_celery(Settings(broker_url=args.redis_url, redis_url=args.redis_url))
    with running_simulator(sim_config) as sim:
        procs, workers = start_night_workers(args, worker_env(args, sim.url, folder), folder)
        try:
            wait_ready(app, workers, timeout_s=120)
            pids = [p.pid for p in procs]
            cpu0, redis0 = process_cpu_s(pids), redis_cpu_s(client)
            out = folder / "producer.json"
            out.unlink(missing_ok=True)
            with Sampler(client) as sampler:
                started = time.monotonic()
                producer = start_producer(REPO, manifest, args.redis_url, out)
                if producer.wait() != 0:
                    raise SystemExit("the producer failed")
                registered_s = time.monotonic() - started
                made = json.loads(out.read_text())
                at_registered = db_bytes(client)
                deadline = time.monotonic() + args.timeout
                while ended(client, made["run_id"]) < args.jobs:
                    if time.monotonic() > deadline:
                        raise SystemExit("the run did not finish in time")
                    time.sleep(0.2)
                makespan = time.monotonic() - started
            worker_cpu = process_cpu_s(pids) - cpu0
            redis_cpu = redis_cpu_s(client) - redis0
            sim_peak = sim.stats()["max_concurrent"]
        finally:
            stop(procs)
            app.close()
    from seedq.store import JobStore

    info = JobStore(client).run(made["run_id"])
    at_end = db_bytes(client)
    archive_s = archive(client, made["run_id"], folder)
    archived = db_bytes(client)
    client.flushdb()
    n = args.jobs

    def per_job(measured: tuple[int, int]) -> dict[str, Any]:
        return {"keys": measured[0], "bytes": measured[1], "bytes_per_job": round(measured[1] / n)}

    return {
        **run_figures(
            makespan, jobs=n, rate_per_s=args.rate, cap=args.cap, latency_s=args.latency, digits=1
        ),
        "delivered": info.counts.get("delivered", 0) if info else 0,
        "failed": info.counts.get("failed", 0) if info else 0,
        "producer_done_after_s": round(registered_s, 1),
        "producer": producer_figures(n, made),
        "worker_processes": workers,
        "worker_cpu_s_per_job": round(worker_cpu / n, 4),
        "redis_cpu_s_per_job": round(redis_cpu / n, 4),
        "peak_broker_messages": sampler.peak_messages,
        "redis_used_memory_peak_growth_mib": round(
            (sampler.peak_memory - sampler.memory_at_start) / MIB, 1
        ),
        "redis_db_when_registered": per_job(at_registered),
        "redis_db_when_ended": per_job(at_end),
        "redis_db_archived": per_job(archived),
        "archive_s": round(archive_s, 1),
        "simulator_max_concurrent": sim_peak,
    }


# -- output ----------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    night = report.get("night")
    lines = [f"{'':<56}{'':>14}"]

    def row(name: str, value: object) -> None:
        lines.append(f"{name:<56}{value!s:>14}")

    for name, sizes in report["producer"].items():
        for m in sizes:
            row(
                f"producer {name}, {m['rows']} rows: rows/s (CPU-bound)",
                f"{m['rows_per_s']} ({m['cpu_rows_per_s']})",
            )
            row("  validate s / register s", f"{m['validate_s']} / {m['register_s']}")
            row(
                "  peak RSS MiB (growth in the passes)",
                f"{m['peak_rss_mib']} ({m['peak_rss_growth_mib']})",
            )
    if night:
        row("makespan s", night["makespan_s"])
        row("lower bound max(N/R, ceil(N/C)*L) s", night["lower_bound_s"])
        row("ratio to the bound", night["ratio_to_bound"])
        row("delivered / failed", f"{night['delivered']} / {night['failed']}")
        row(
            "producer in the night: rows/s, RSS growth MiB",
            f"{night['producer']['rows_per_s']}, {night['producer']['peak_rss_growth_mib']}",
        )
        row("worker CPU s per job (workers + events)", night["worker_cpu_s_per_job"])
        row("Redis CPU s per job", night["redis_cpu_s_per_job"])
        row("peak broker messages", night["peak_broker_messages"])
        row(
            "Redis used_memory peak growth MiB (server-wide)",
            night["redis_used_memory_peak_growth_mib"],
        )
        for stage in ("when_registered", "when_ended", "archived"):
            row(
                f"Redis bytes per job, {stage.replace('_', ' ')}",
                night[f"redis_db_{stage}"]["bytes_per_job"],
            )
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # A couple of minutes on this project's shared 2-core machine; 100000 for the night.
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--cap", type=int, default=100, help="in-flight cap C")
    # What the workers of one such machine sustain beside everything else on it: the
    # bound is then the rate's, N/R.
    parser.add_argument("--rate", type=float, default=10.0, help="submit rate R, per s")
    parser.add_argument("--latency", type=float, default=1.0, help="provider latency L, s")
    parser.add_argument(
        "--per-queue", type=int, default=1, help="worker processes per queue (as Compose)"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="instead: this many processes on every queue"
    )
    parser.add_argument(
        "--baseline",
        default=DEFAULT_BASELINE,
        help="git revision whose producer is measured beside this one; none to skip "
        "(default: %(default)s, before the producer's speed-up)",
    )
    parser.add_argument("--producer-only", action="store_true", help="skip the night")
    parser.add_argument("--timeout", type=float, default=4 * 3600)
    parser.add_argument("--json", action="store_true", help="print JSON, not a table")
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help="Redis of the broker and the job store; its database is FLUSHED before and "
        "after (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--producer-child"]:
        producer_child(*argv[1:5])
        return 0
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
    sys.path.insert(0, str(REPO))
    from bench.harness import connect

    args = parse_args(argv)
    client = connect(args.redis_url)
    if client is None:
        return 1
    report: dict[str, Any] = {
        "jobs": args.jobs,
        "cap": args.cap,
        "rate_per_s": args.rate,
        "latency_s": args.latency,
        "load_average_at_start": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory(prefix="seedq-scale-") as tmp:
        report["producer"] = measure_producer(args, client, Path(tmp))
        if not args.producer_only:
            report["night"] = run_night(args, client, Path(tmp))
    report["load_average_at_end"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2) if args.json else table(report))
    if not args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
