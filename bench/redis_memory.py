"""Redis bytes per job, and the steady-state memory of nightly runs with and without
retention (worker/retention.py), in one run.

    python bench/redis_memory.py [--jobs 100000] [--nights 30] [--retention-days 30]
                                 [--sample 40] [--redis-url redis://127.0.0.1:6379/5]
                                 [--no-private]

Runs the demo pipeline (``seedq run`` with the simulator, its Celery tasks and ticker
in this process) on ``--sample`` jobs, with its state in a real Redis instead of
fakeredis, then reads ``MEMORY USAGE`` of every key: the bytes of a delivered job
(its hash and its generation key), of the run's own keys, and again once the run is
archived (its jobs compacted) and once it is pruned. From those it computes, for
``--jobs`` jobs a night, the memory after ``--nights`` nights without retention (every
record kept, uncompacted) and the steady state under ``--retention-days`` (the nights
still retained compacted, plus the night in progress). Prints JSON.

It measures twice: on the Redis of ``--redis-url`` as it is configured (a user's own
Redis keeps the default ``hash-max-listpack-value 64``), then on a private
``redis-server`` it starts and stops itself (``cli.localredis``: the local run's, which
sets ``hash-max-listpack-value 1024`` like the stack's), unless ``--no-private`` or no
``redis-server`` is installed. A hash whose every value fits the limit keeps Redis's
compact listpack encoding; one longer value makes it a hash table, for good.

Needs a Redis (--redis-url, by default database 5 on 127.0.0.1:6379), whose database it
FLUSHES before and after: never point it at one that holds anything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import redis
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

from cli.localredis import private_redis  # noqa: E402
from seedq import keys  # noqa: E402
from seedq.errors import LocalStoreError  # noqa: E402
from seedq.store import JobStore  # noqa: E402
from storage.local import LocalStorage  # noqa: E402
from worker.retention import archive_run, prune_run  # noqa: E402

GB = 1024**3


def write_manifest(folder: Path, jobs: int) -> Path:
    """A CSV of ``jobs`` distinct jobs on one local image (the loopback publisher serves it)."""
    Image.new("RGB", (64, 48), (40, 90, 200)).save(folder / "blue.png")
    lines = ["id,prompt,input_image,duration,resolution"]
    lines += [
        f"clip-{n:05d},a blue cube turns slowly on a desk take {n},blue.png,4,480p"
        for n in range(jobs)
    ]
    path = folder / "night.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextlib.contextmanager
def demo_on(client: redis.Redis) -> Iterator[None]:
    """The demo stack with its state in ``client``: ``cli.embedded`` builds a fakeredis
    client; this hands it the real one instead. The tick's retention is held off, so
    the records are measured as delivered before this bench archives them itself."""
    with (
        mock.patch("cli.embedded.fakeredis.FakeRedis", lambda **_kw: client),
        mock.patch("worker.ticker.retain", lambda *_a, **_kw: None),
    ):
        yield


def run_demo(client: redis.Redis, manifest: Path, out: Path) -> None:
    from cli.main import _register, app

    _register()
    with demo_on(client), contextlib.redirect_stdout(sys.stderr):
        try:
            app(["run", str(manifest), "--out", str(out), "--demo"], standalone_mode=False)
        except SystemExit as exc:
            if exc.code:
                raise


def bytes_of(client: redis.Redis, key: str) -> int:
    return int(client.memory_usage(key, samples=0) or 0)


def usage(client: redis.Redis, pattern: str) -> tuple[int, int]:
    """(keys, bytes) of the keys matching ``pattern``, as MEMORY USAGE counts them."""
    found = list(client.scan_iter(match=pattern, count=1000))
    return len(found), sum(int(client.memory_usage(k, samples=0) or 0) for k in found)


def measure(client: redis.Redis, run_id: str, jobs: int) -> dict[str, float]:
    """Bytes of the run's jobs (hash, generation key, their share of the run's list), of
    the run's own keys, and of everything in the database."""
    n_jobs, job_bytes = usage(client, keys.job("*"))
    n_gens, gen_bytes = usage(client, keys.generation("*"))
    list_bytes = bytes_of(client, keys.run_jobs(run_id))
    _n, run_bytes = usage(client, keys.run(run_id) + "*")
    _n, all_bytes = usage(client, "*")
    assert n_jobs == jobs, f"{n_jobs} job records for {jobs} jobs"
    return {
        "job_hash_bytes": round(job_bytes / jobs, 1),
        "generation_key_bytes": round(gen_bytes / max(n_gens, 1), 1),
        "run_list_bytes_per_job": round(list_bytes / jobs, 1),
        "bytes_per_job": round((job_bytes + gen_bytes + list_bytes) / jobs, 1),
        "run_overhead_bytes": run_bytes - list_bytes + bytes_of(client, keys.RUNS),
        "all_keys_bytes": all_bytes,
    }


def night_bytes(per_job: float, overhead: float, jobs: int) -> float:
    return float(per_job * jobs + overhead)


def project(
    delivered: dict[str, float], archived: dict[str, float], args: argparse.Namespace
) -> dict[str, Any]:
    """``--nights`` nights without retention (every record kept as delivered), against
    the same nights under it: the nights created within the window, compacted once
    archived, plus the night still running; older ones are pruned. Then the same
    after 2, 3 and 12 times as many nights: one grows, the other stays."""
    raw = night_bytes(delivered["bytes_per_job"], delivered["run_overhead_bytes"], args.jobs)
    kept = night_bytes(archived["bytes_per_job"], archived["run_overhead_bytes"], args.jobs)

    def with_retention(nights: int) -> float:
        retained: int = min(nights - 1, math.ceil(args.retention_days))
        return kept * retained + raw

    return {
        "per_night_bytes_as_delivered": round(raw),
        "per_night_bytes_archived": round(kept),
        "gb_after_nights": {
            str(n): {
                "without_retention": round(raw * n / GB, 2),
                "with_retention": round(with_retention(n) / GB, 2),
            }
            for n in (args.nights, 2 * args.nights, 3 * args.nights, 12 * args.nights)
        },
    }


def on_server(client: redis.Redis, args: argparse.Namespace) -> dict[str, Any]:
    """Run, measure, archive, measure, prune and measure the sample on this server; the
    figures and their projection. Flushes its database before and after."""
    client.flushdb()
    try:
        with tempfile.TemporaryDirectory(prefix="seedq-bench-") as tmp:
            folder = Path(tmp)
            out = folder / "out"
            run_demo(client, write_manifest(folder, args.sample), out)
            store = JobStore(client)
            [run] = store.runs()
            assert run.counts.get("delivered") == args.sample, run.counts
            # The biller may still be asking for bills; give up on those, as it would.
            for job_id in store.run_job_ids(run.id):
                store.billing.give_up(job_id, run.id)
            delivered = measure(client, run.id, args.sample)
            archive_run(store, LocalStorage(out), run.id, now_s=run.created_at)
            archived = measure(client, run.id, args.sample)
            for _step in prune_run(store, run.id):
                pass
            _n, left = usage(client, "*")
            config: Any = client.config_get("hash-max-listpack-value")
            return {
                # Above this many bytes in one value a hash leaves the compact encoding.
                "server_hash_max_listpack_value": int(config["hash-max-listpack-value"]),
                "as_delivered": delivered,
                "archived_compacted": archived,
                "after_prune_all_keys_bytes": left,
                "projection": {
                    "jobs_per_night": args.jobs,
                    "nights": args.nights,
                    "retention_days": args.retention_days,
                    **project(delivered, archived, args),
                },
            }
    finally:
        client.flushdb()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs a night (projection)")
    parser.add_argument("--nights", type=int, default=30, help="nights of the projection")
    parser.add_argument("--retention-days", type=float, default=30.0)
    parser.add_argument("--sample", type=int, default=40, help="jobs actually run and measured")
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/5",
        help="a Redis database this bench FLUSHES before and after (default: database 5)",
    )
    parser.add_argument(
        "--no-private",
        action="store_true",
        help="skip the second measure, on a private redis-server with listpack values of 1 KB",
    )
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"sample_jobs": args.sample}
    result[args.redis_url] = on_server(redis.Redis.from_url(args.redis_url), args)
    if not args.no_private:
        try:
            with (
                tempfile.TemporaryDirectory(prefix="seedq-bench-redis-") as tmp,
                private_redis(Path(tmp)) as client,
            ):
                result["private redis-server (cli.localredis)"] = on_server(client, args)
        except LocalStoreError as exc:
            result["private redis-server (cli.localredis)"] = f"not measured: {exc}"
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
