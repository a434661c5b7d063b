"""A seedq cluster on real processes (Celery workers, the simulator over HTTP, S3), the
manifests it runs, and what every chaos test checks of it at the end. The fixture that
makes one is in conftest.py."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image

from seedq import keys
from seedq.store import JobStore, decoded
from simulator.server import SimHandle
from tests.e2e.processes import REPO, seedq_background, seedq_cli
from worker.verify import verify_video

API_KEY = "sk-e2e-very-secret-key-0123456789"
SETTLED = frozenset({"delivered", "failed", "cancelled"})
# A task ends in one of: succeeded, raised (FAILURE), retry (RETRY; worker.tasks).
_TASK_LINE = re.compile(r"Task (seedq\.\w+)\[([0-9a-f-]+)\] (received|succeeded|raised|retry)")


def clip_rows(prefix: str, n: int, image: str = "images/red.png") -> list[dict[str, str]]:
    """``n`` manifest rows ``PREFIX-0..n-1`` of short 480p clips of one sample image."""
    return [
        {
            "id": f"{prefix}-{i}",
            "prompt": f"{prefix} clip {i}",
            "input_image": image,
            "duration": "4",
            "resolution": "480p",
        }
        for i in range(n)
    ]


@dataclass
class Cluster:
    """Everything a test needs to run seedq as an operator would."""

    env: dict[str, str]
    sim: SimHandle
    store: redis.Redis
    bucket: str
    s3: Any
    folder: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def seedq(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return seedq_cli(*args, env=self.env, cwd=self.folder, timeout=timeout)

    def seedq_background(self, *args: str) -> subprocess.Popen[str]:
        return seedq_background(*args, env=self.env, cwd=self.folder)

    def start_worker(self, *extra: str) -> subprocess.Popen[bytes]:
        log = (self.folder / f"worker-{len(self.workers)}.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "worker",
                "-l",
                "INFO",
                "-P",
                "threads",
                "-c",
                "4",
                "-n",
                f"w{len(self.workers)}-{uuid.uuid4().hex[:6]}@%h",
                "--without-mingle",
                "--without-gossip",
                *extra,
            ],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.folder.glob("worker-*.log"))
        )

    def holding(self, n: int) -> list[str]:
        """The tasks worker ``n`` has received and not finished, from its log (names)."""
        log = (self.folder / f"worker-{n}.log").read_text(errors="replace")
        open_tasks: dict[str, str] = {}
        for name, task_id, what in _TASK_LINE.findall(log):
            if what == "received":
                open_tasks[task_id] = name
            else:
                open_tasks.pop(task_id, None)
        return sorted(open_tasks.values())

    def jobs(self, job_ids: list[str]) -> dict[str, dict[str, str]]:
        """Each job's record (empty for a job the store does not know), read as the
        store reads it: a compacted one (worker.retention) has its long fields packed."""
        rows = JobStore(self.store).jobs(job_ids)
        return dict(zip(job_ids, rows, strict=True))

    def states(self, job_ids: list[str]) -> dict[str, str]:
        return {j: r.get("state", "?") for j, r in self.jobs(job_ids).items()}

    def wait_settled(self, job_ids: list[str], timeout_s: float) -> dict[str, dict[str, str]]:
        """Wait until every job is delivered, failed or cancelled; on timeout, fail with
        the jobs still moving and the tail of the workers' logs. A store that does not
        answer (being restarted) is waited for too."""
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                records = self.jobs(job_ids)
                if all(r.get("state") in SETTLED for r in records.values()):
                    return records
            if time.monotonic() > deadline:
                pytest.fail(
                    f"not settled within {timeout_s:.0f} s:\n{self.unsettled(job_ids)}\n"
                    f"simulator: {self.sim.stats()}\n{self.logs()[-6000:]}\n"
                    f"log lines of those jobs:\n{self.log_lines_of(job_ids)}"
                )
            time.sleep(0.25)

    def log_lines_of(self, job_ids: list[str], limit: int = 40) -> str:
        """The workers' last log lines naming a job not delivered yet."""
        with contextlib.suppress(redis.RedisError):
            job_ids = [j for j, s in self.states(job_ids).items() if s != "delivered"]
        names = re.compile("|".join(rf"\b{re.escape(j)}\b" for j in job_ids) or "$^")
        lines = [line for line in self.logs().splitlines() if names.search(line)]
        return "\n".join(lines[-limit:])

    def unsettled(self, job_ids: list[str]) -> str:
        """The jobs not delivered, each with its state and what went wrong last."""
        try:
            records = self.jobs(job_ids)
        except redis.RedisError as exc:
            return f"(store unreachable: {exc})"
        fields = ("state", "failed_step", "error", "last_error", "send_settled", "generation_id")
        return "\n".join(
            f"  {job_id}: "
            + ", ".join(f"{f}={r[f]!r}" for f in fields if r.get(f))
            + self._whereabouts(job_id, r.get("run_id", ""))
            for job_id, r in records.items()
            if r.get("state") != "delivered"
        )

    def _whereabouts(self, job_id: str, run_id: str) -> str:
        """Where a job stuck in a test is: its slot's and delivery's leases (seconds from
        now), its place in its run's queue, and which worker processes hold a message
        of it: what tells a lost message from a slow one."""
        try:
            now_s = float(self.store.time()[0])
            slot = self.store.zscore(keys.IN_FLIGHT, job_id)
            heard = self.store.zscore(keys.DELIVERING, job_id)
            waiting = self.store.zscore(keys.run_waiting(run_id), job_id) if run_id else None
            holders = [
                decoded(w)
                for w in self.store.smembers(keys.WORKERS)
                if any(
                    decoded(v).endswith(f"|{job_id}")
                    for v in self.store.hvals(keys.worker_held(decoded(w)))
                )
            ]
        except redis.RedisError:
            return ""
        parts = [
            f"slot lease {slot - now_s:+.0f} s" if slot is not None else "no slot",
            f"delivery heard of {heard - now_s:+.0f} s" if heard is not None else "",
            "waiting" if waiting is not None else "",
            f"held by {holders}" if holders else "held by no worker",
        ]
        return "; " + ", ".join(p for p in parts if p)

    def objects(self) -> dict[str, int]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix="out/")
        return {o["Key"]: o["Size"] for o in listed.get("Contents", [])}

    def stop(self) -> None:
        """Kill the workers outright: the test is over and checks nothing of a shutdown,
        so a warm one (seconds per test) is not waited for. Waited for, each is gone
        before the test's database is flushed."""
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
        for proc in self.workers:
            proc.wait()


ClusterFactory = Callable[..., Cluster]


def write_manifest(folder: Path, rows: list[dict[str, str]]) -> Path:
    images = folder / "images"
    images.mkdir(exist_ok=True)
    for name, colour in (
        ("red.png", (200, 40, 40)),
        ("blue.jpg", (40, 40, 200)),
        ("face-photo.png", (220, 180, 160)),
    ):
        Image.new("RGB", (320, 240), colour).save(images / name)
    fields = sorted({k for row in rows for k in row})
    lines = [",".join(fields)] + [",".join(row.get(f, "") for f in fields) for row in rows]
    path = folder / "manifest.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def assert_every_job_accounted(
    c: Cluster, job_ids: list[str], *, may_fail_at: frozenset[str] = frozenset()
) -> dict[str, dict[str, str]]:
    """What every chaos test checks at the end; returns the job records.

    Every job is delivered, or failed with a reason at a step in ``may_fail_at``; none is
    lost or left moving; the run counters agree with the jobs; no slot or delivery lease
    is left behind; the provider saw each job at most once (no duplicate enqueue, and one
    recorded generation per enqueue); every delivered job's video is in S3 once, with
    its sidecar, decodes and matches its request, and nothing else is there."""
    records = c.jobs(job_ids)
    lost = [j for j, r in records.items() if not r]
    assert not lost, f"jobs lost from the store: {lost}"
    states = {j: r["state"] for j, r in records.items()}
    odd = {j: s for j, s in states.items() if s not in ("delivered", "failed")}
    assert not odd, f"neither delivered nor failed: {odd}"
    for job_id, r in records.items():
        if r["state"] == "failed":
            assert r.get("error"), f"{job_id} failed without a reason: {r}"
            assert r.get("failed_step") in may_fail_at, f"{job_id} should not fail: {r}"

    by_run: dict[str, dict[str, int]] = {}
    for r in records.values():
        counted = by_run.setdefault(r["run_id"], {})
        counted[r["state"]] = counted.get(r["state"], 0) + 1
    for run_id, counted in by_run.items():
        raw: dict[bytes, bytes] = c.store.hgetall(keys.run_counts(run_id))  # type: ignore[assignment]
        counters = {k.decode(): int(v) for k, v in raw.items() if int(v)}
        assert counters == counted, f"run {run_id}: counters {counters}, jobs {counted}"
    assert c.store.zrange(keys.IN_FLIGHT, 0, -1) == [], "in-flight slots left behind"
    assert c.store.zrange(keys.DELIVERING, 0, -1) == [], "delivery leases left behind"

    stats = c.sim.stats()
    generations = [r["generation_id"] for r in records.values() if r.get("generation_id")]
    assert stats["duplicate_enqueues"] == 0, stats
    assert len(set(generations)) == len(generations), "two jobs share a generation"
    assert stats["enqueued"] == stats["generations"] == len(generations), (
        f"enqueued {stats['enqueued']}, generations {stats['generations']}, "
        f"jobs holding one {len(generations)}"
    )

    delivered = {j: r for j, r in records.items() if r["state"] == "delivered"}
    expected = {r["output_uri"].removeprefix(f"s3://{c.bucket}/"): j for j, r in delivered.items()}
    listed = c.s3.list_objects_v2(Bucket=c.bucket, Prefix="out/")
    assert not listed.get("IsTruncated")
    # Published inputs, and the run archives (worker.retention) beside the clips.
    keys_in_s3 = [
        o["Key"]
        for o in listed.get("Contents", [])
        if "/_inputs/" not in o["Key"] and "/_runs/" not in o["Key"]
    ]
    # An unplayable download is kept under quarantine/ by the failed job that names it.
    quarantined = {k for k in keys_in_s3 if k.startswith("out/quarantine/")}
    named = {r.get("quarantine_uri", "") for r in records.values() if r["state"] == "failed"}
    for key in quarantined:
        video = key.removesuffix(".json").removesuffix(".mp4") + ".mp4"
        assert f"s3://{c.bucket}/{video}" in named, f"{key}: kept, yet no failed job names it"
    stored = [k for k in keys_in_s3 if k not in quarantined]
    videos = sorted(k for k in stored if k.endswith(".mp4"))
    assert videos == sorted(expected), "the videos in S3 are not those of the delivered jobs"
    assert sorted(k for k in stored if not k.endswith(".mp4")) == sorted(
        k.removesuffix(".mp4") + ".json" for k in expected
    ), "a sidecar is missing or extra"
    with tempfile.TemporaryDirectory(prefix="seedq-chaos-") as folder:
        path = Path(folder) / "video.mp4"
        for key, job_id in expected.items():
            c.s3.download_file(c.bucket, key, str(path))
            info = verify_video(path, json.loads(delivered[job_id]["sent_params"]))
            assert info.size_bytes == int(delivered[job_id]["size_bytes"]), key
    return records
