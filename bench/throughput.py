"""Throughput of the pipeline against the simulator, beside a naive baseline, in one run.

    python bench/throughput.py [--jobs 2000] [--cap 100] [--latency 2] [--rate 50]
                               [--no-events] [--redis-url redis://127.0.0.1:6379/12]

N jobs, provider latency L (the simulator in --fast mode), in-flight cap C and submit
rate R. Prints JSON: for seedq and for the naive baseline (bench/naive.py: one task per
job that enqueues and polls in place with sleep, Celery's per-worker rate_limit), on
the same worker processes and threads: the makespan, the lower bound
max(N/R, ceil(N/C) * L) and their ratio, provider calls per job, worker CPU seconds per
job (workers and the events listener), the CPU of the Redis server and of this process
(the simulator, the producer) per job, the peak of messages in the broker, and seedq's
sweeps (list calls) per second, which the poll interval bounds. Needs a
Redis (--redis-url, by default database 12 on 127.0.0.1:6379), whose database it
FLUSHES before and after each run: never point it at one that holds anything.

``--no-events`` runs seedq without ``seedq events`` (the completion listener): every
finished generation is then found by the sweep (``--poll``), the polling path.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

from bench.harness import (  # noqa: E402
    PeakSampler,
    child_cpu_s,
    connect,
    own_cpu_s,
    redis_cpu_s,
    run_figures,
    simulator_config,
    start_events_listener,
    start_workers,
    stop,
    wait_ready,
    wait_until,
)
from producer.manifest import ReadOptions  # noqa: E402
from producer.submit import validate_and_submit  # noqa: E402
from seedq.admission import admission_for  # noqa: E402
from seedq.catalog import ModelCatalog  # noqa: E402
from seedq.dispatch import celery_sender  # noqa: E402
from seedq.queueing import make_celery  # noqa: E402
from seedq.settings import Settings  # noqa: E402
from seedq.store import JobStore  # noqa: E402
from simulator.server import running_simulator  # noqa: E402

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
MODEL = "bytedance-seedance-2-0-image-to-video"
KEY = "bench-key"
LIST_CALL = "GET /api/ai/queue"  # the sweep's one call


def api_calls(stats: dict[str, Any]) -> int:
    return sum(n for name, n in stats["requests"].items() if " /api/" in name)


def write_manifest(path: Path, jobs: int) -> None:
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "prompt", "input_image", "resolution", "duration"])
        for i in range(jobs):
            out.writerow([f"b-{i}", f"clip {i}", "http://127.0.0.1:9/p.png", "480p", 4])


def seedq_env(args: argparse.Namespace, sim: Any, folder: Path) -> dict[str, str]:
    """The environment of seedq's worker processes and events listener."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SEEDQ_BROKER_URL": args.redis_url,
        "SEEDQ_REDIS_URL": args.redis_url,
        "SEEDQ_PROVIDER_URL": sim.url,
        "OXEN_API_KEY": KEY,
        "SEEDQ_OUTPUT": str(folder / "out"),
        "SEEDQ_SUBMIT_RATE": f"{args.rate}/s",
        "SEEDQ_POLL_RATE": "200/s",
        "SEEDQ_MAX_IN_FLIGHT": str(args.cap),
        "SEEDQ_POLL_INTERVAL_S": str(args.poll),
        "SEEDQ_ALLOW_PRIVATE_URLS": "true",
    }


def submit_manifest(manifest: Path, app: Any, settings: Settings, store: JobStore) -> str:
    """Validate and submit the bench's manifest, as ``seedq submit`` does; the run id."""
    _, done = validate_and_submit(
        [manifest],
        ReadOptions(default_model=MODEL, allow_private_urls=True),
        ModelCatalog(),
        store,
        celery_sender(app),
        admission=admission_for(store, settings),
        name="bench",
    )
    return done.run_id


def all_ended(store: JobStore, run_id: str, jobs: int) -> bool:
    info = store.run(run_id)
    return info is not None and sum(info.counts.get(s, 0) for s in ("delivered", "failed")) >= jobs


def run_seedq(
    args: argparse.Namespace, sim: Any, client: redis.Redis, folder: Path
) -> dict[str, Any]:
    env = seedq_env(args, sim, folder)
    settings = Settings(broker_url=args.redis_url, redis_url=args.redis_url, max_in_flight=args.cap)
    app = make_celery(settings)
    cpu0 = child_cpu_s()
    procs = start_workers("worker", env, args.workers, args.threads, folder / "seedq.log")
    if not args.no_events:
        procs.append(start_events_listener(env, folder))
    wait_ready(app, args.workers)
    manifest = folder / "jobs.csv"
    write_manifest(manifest, args.jobs)
    store = JobStore(client)
    other0 = own_cpu_s(), redis_cpu_s(client)
    with PeakSampler(client) as peak:
        started = time.monotonic()
        run_id = submit_manifest(manifest, app, settings, store)
        wait_until(lambda: all_ended(store, run_id, args.jobs), args.timeout)
        makespan = time.monotonic() - started
    # Before the tick's retention compacts the ended run (a pass every 10 s) drops them.
    hold = slot_hold(store, run_id)
    others = other_cpu(args, client, other0)
    info = store.run(run_id)
    sweeps = sim.stats()["requests"].get(LIST_CALL, 0)
    stop(procs)
    app.close()
    result = figures(
        args,
        makespan,
        child_cpu_s() - cpu0,
        api_calls(sim.stats()),
        peak.peak,
        delivered=info.counts.get("delivered", 0) if info else 0,
    )
    result.update(others)
    result["sweeps_per_s"] = round(sweeps / makespan, 2)  # at most 1 / poll interval
    result["mean_slot_hold_s"] = hold
    return result


def other_cpu(
    args: argparse.Namespace, client: redis.Redis, since: tuple[float, float]
) -> dict[str, float]:
    """CPU per job outside the workers: where the rest of the machine's two cores went."""
    own, server = since
    return {
        "simulator_and_producer_cpu_s_per_job": round((own_cpu_s() - own) / args.jobs, 4),
        "redis_cpu_s_per_job": round((redis_cpu_s(client) - server) / args.jobs, 4),
    }


def slot_hold(store: JobStore, run_id: str) -> dict[str, float]:
    """Where a slot's time goes: admitted -> enqueued -> generated (L is the floor)."""
    spans: dict[str, list[float]] = {
        "admitted_to_started": [],
        "admitted_to_enqueued": [],
        "enqueued_to_generated": [],
    }
    for job_id in store.run_job_ids(run_id):
        job = store.job(job_id)
        try:
            admitted, started, sent, generated = (
                float(job[k])
                for k in ("admitted_at", "submit_started_at", "submitted_at", "generated_at")
            )
        except (KeyError, ValueError):
            continue
        spans["admitted_to_started"].append(started - admitted)
        spans["admitted_to_enqueued"].append(sent - admitted)
        spans["enqueued_to_generated"].append(generated - sent)
    return {k: round(sum(v) / len(v), 3) for k, v in spans.items() if v}


def run_baseline(
    args: argparse.Namespace, sim: Any, client: redis.Redis, folder: Path
) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "NAIVE_BROKER_URL": args.redis_url,
        "NAIVE_REDIS_URL": args.redis_url,
        "NAIVE_PROVIDER_URL": sim.url,
        "NAIVE_API_KEY": KEY,
        "NAIVE_RATE": f"{args.rate}/s",
        "NAIVE_POLL_S": str(args.poll),
    }
    os.environ["NAIVE_BROKER_URL"] = args.redis_url
    from bench.naive import DONE_KEY, app, generate

    app.conf.broker_url = args.redis_url
    cpu0 = child_cpu_s()
    procs = start_workers("bench.naive", env, args.workers, args.threads, folder / "naive.log")
    wait_ready(app, args.workers)
    params = {
        "prompt": "clip",
        "input_image": "http://127.0.0.1:9/p.png",
        "resolution": "480p",
        "duration": 4,
    }
    other0 = own_cpu_s(), redis_cpu_s(client)
    with PeakSampler(client) as peak:
        started = time.monotonic()
        for i in range(args.jobs):
            generate.delay(MODEL, {**params, "prompt": f"clip {i}"})
        wait_until(lambda: int(client.get(DONE_KEY) or 0) >= args.jobs, args.timeout)
        makespan = time.monotonic() - started
    others = other_cpu(args, client, other0)
    stop(procs)
    result = figures(
        args, makespan, child_cpu_s() - cpu0, api_calls(sim.stats()), peak.peak, delivered=args.jobs
    )
    result.update(others)
    return result


def figures(
    args: argparse.Namespace,
    makespan: float,
    cpu_s: float,
    calls: int,
    peak: int,
    *,
    delivered: int,
) -> dict[str, Any]:
    return {
        **run_figures(
            makespan,
            jobs=args.jobs,
            rate_per_s=args.rate,
            cap=args.cap,
            latency_s=args.latency,
            digits=2,
        ),
        "provider_calls_per_job": round(calls / args.jobs, 2),
        "worker_cpu_s_per_job": round(cpu_s / args.jobs, 4),
        "peak_broker_messages": peak,
        "delivered": delivered,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--cap", type=int, default=100)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--poll", type=float, default=0.5, help="poll interval, both sides")
    parser.add_argument("--workers", type=int, default=2)
    # As the Compose stack's workers run (-P threads -c 8): more threads per process only
    # queue on the GIL, and each task waits longer for its turn.
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--no-events",
        action="store_true",
        help="no completion listener: seedq finds finished generations by the sweep alone",
    )
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help="Redis of the broker and the job store; its database is FLUSHED before and "
        "after each pipeline's run (default: %(default)s)",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    client = connect(args.redis_url)
    if client is None:
        return 1
    config = simulator_config(cap=args.cap, latency_s=args.latency)
    report: dict[str, Any] = {
        "jobs": args.jobs,
        "cap": args.cap,
        "latency_s": args.latency,
        "submit_rate_per_s": args.rate,
        "workers": args.workers,
        "threads_per_worker": args.threads,
        "poll_interval_s": args.poll,
        "completion_events": not args.no_events,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, runner in (("seedq", run_seedq), ("naive_baseline", run_baseline)):
            if name == "naive_baseline" and args.skip_baseline:
                continue
            client.flushdb()
            with running_simulator(config) as sim:
                report[name] = runner(args, sim, client, folder)
                report[name]["simulator_max_concurrent"] = sim.stats()["max_concurrent"]
        client.flushdb()
    if "naive_baseline" in report:
        report["throughput_vs_baseline"] = round(
            report["naive_baseline"]["makespan_s"] / report["seedq"]["makespan_s"], 2
        )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
