"""Producer throughput and memory: validate + register + enqueue a large CSV, beside a
plain loop of ``task.delay()`` over the same rows as the baseline, in one invocation.

    python bench/producer.py [--rows 100000] [--broker redis://127.0.0.1:6379/14]

Prints JSON. Each phase runs in a fresh process; its peak memory is the growth of
that process's peak RSS while it runs, measured at two sizes to show that it does not
grow with the row count. Uses a real
Redis (broker and job store) when one answers, else in-memory ones. Flushes the chosen
Redis database before and after.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# This file's name is the (bench/producer.py); Python puts its folder first on
# sys.path, where it would shadow the `producer` package it measures. The repository
# goes first instead, for `bench.harness` (as in bench/throughput.py).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import redis  # noqa: E402
from PIL import Image  # noqa: E402

from bench.harness import write_catalog  # noqa: E402
from producer.manifest import ReadOptions  # noqa: E402
from producer.submit import validate_and_submit  # noqa: E402
from seedq.catalog import ModelCatalog  # noqa: E402
from seedq.dispatch import celery_sender  # noqa: E402
from seedq.queueing import make_celery  # noqa: E402
from seedq.settings import Settings  # noqa: E402
from seedq.store import JobStore  # noqa: E402


def write_csv(path: Path, rows: int) -> None:
    """The catalog, every row naming one local image beside it."""
    Image.new("RGB", (32, 32), (10, 120, 200)).save(path.parent / "img.png")
    write_catalog(
        path,
        rows,
        lambda i: "img.png",
        resolutions=("480p", "720p", "1080p"),
        durations_s=range(4, 16),
    )


def _child(phase: str, path: str, broker: str | None, out: Any) -> None:
    """One phase in a fresh process, so its peak memory is its own."""
    import fakeredis

    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    settings = Settings(broker_url=broker, redis_url=broker)
    app = make_celery(settings)
    client = redis.Redis.from_url(broker) if broker else fakeredis.FakeRedis()
    started = time.perf_counter()
    if phase == "seedq":
        opts = ReadOptions(
            default_model="bytedance-seedance-2-0-image-to-video",
            sets={"prompt": "A slow turntable of {product_name}", "output": "catalog/{sku}.mp4"},
        )
        _, done = validate_and_submit(
            [Path(path)], opts, ModelCatalog(), JobStore(client), celery_sender(app), name="bench"
        )
        sent = done.enqueued
    else:

        @app.task(name="bench.noop")
        def noop(**kwargs: Any) -> None:  # the baseline's task; never runs here
            return None

        sent = 0
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                noop.delay(**row)
                sent += 1
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_rss
    app.close()
    out.put({"seconds": elapsed, "peak_growth_mib": peak_kib / 1024, "enqueued": sent})


def measure(
    phase: str, path: Path, broker: str | None, client: redis.Redis | None
) -> dict[str, Any]:
    if client is not None:
        client.flushdb()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(phase, str(path), broker, queue))
    proc.start()
    result: dict[str, Any] = queue.get()
    proc.join()
    if client is not None:
        client.flushdb()
    return result


def pick_redis(url: str) -> tuple[str | None, redis.Redis | None]:
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError:
        return None, None
    return url, client


def run_size(
    rows: int, folder: Path, broker: str | None, client: redis.Redis | None
) -> dict[str, Any]:
    path = folder / f"catalog-{rows}.csv"
    write_csv(path, rows)
    ours = measure("seedq", path, broker, client)
    base = measure("baseline", path, broker, client)

    def shape(m: dict[str, Any]) -> dict[str, Any]:
        return {
            "seconds": round(m["seconds"], 2),
            "rows_per_s": round(rows / m["seconds"]),
            "peak_rss_growth_mib": round(m["peak_growth_mib"], 1),
            "enqueued": m["enqueued"],
        }

    return {
        "rows": rows,
        "seedq_validate_register_enqueue": shape(ours),
        "baseline_plain_delay_loop": shape(base),
        "speed_vs_baseline": round(base["seconds"] / ours["seconds"], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    broker, client = pick_redis(args.broker)
    report: dict[str, Any] = {
        "broker": broker or "memory:// (no Redis answered)",
        "job_store": broker or "fakeredis (in process; its memory counts in peak_mib)",
    }
    with tempfile.TemporaryDirectory() as folder:
        sizes = sorted({max(1, args.rows // 10), args.rows})
        report["results"] = [run_size(n, Path(folder), broker, client) for n in sizes]
    if len(report["results"]) == 2:
        small, big = report["results"]
        report["peak_growth_10x_rows"] = round(
            big["seedq_validate_register_enqueue"]["peak_rss_growth_mib"]
            / max(0.1, small["seedq_validate_register_enqueue"]["peak_rss_growth_mib"]),
            2,
        )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
