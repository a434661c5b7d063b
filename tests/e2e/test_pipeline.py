"""End to end: `seedq run` with real `celery worker` processes, a real broker, the
simulator over HTTP and an S3-protocol server delivers every job, once."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.cluster import API_KEY
from worker.verify import verify_video

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(300)]
Manifest = Callable[[Path, list[dict[str, str]]], Path]

ROWS = [
    {
        "id": f"clip-{i}",
        "prompt": f"product {i} turns slowly",
        "input_image": img,
        "duration": str(dur),
        "resolution": "480p",
        "generate_audio": audio,
        "aspect_ratio": ratio,
    }
    for i, (img, dur, audio, ratio) in enumerate(
        [
            ("images/red.png", 4, "no", "16:9"),
            ("images/blue.jpg", 5, "yes", "1:1"),
            ("images/red.png", 4, "yes", "9:16"),
            ("images/blue.jpg", 6, "no", "adaptive"),
            ("images/red.png", 5, "no", "4:3"),
            ("images/blue.jpg", 4, "no", "3:4"),
        ]
    )
]


def check_delivered(c: Any, rows: list[dict[str, str]]) -> None:
    objects = c.objects()
    for row in rows:
        key = f"out/{row['id']}.mp4"
        assert key in objects, (sorted(objects), c.logs()[-3000:])
        sidecar = json.loads(
            c.s3.get_object(Bucket=c.bucket, Key=f"out/{row['id']}.json")["Body"].read()
        )
        assert sidecar["job_id"] == row["id"] and sidecar["generation_id"]
        assert sidecar["params"]["prompt"] == row["prompt"]
        assert sidecar["video"]["size_bytes"] == objects[key]
        assert sidecar["cost"]["estimated"] > 0 and sidecar["warnings"] == []
        # seedq run waits for the workers' billing pass: the bill is in the sidecar.
        assert sidecar["cost"]["billed_status"] == "billed" and sidecar["cost"]["billed"] > 0
        with tempfile.NamedTemporaryFile(suffix=".mp4") as fh:
            fh.write(c.s3.get_object(Bucket=c.bucket, Key=key)["Body"].read())
            fh.flush()
            info = verify_video(
                Path(fh.name), sidecar["params"] | {"duration": int(row["duration"])}
            )
        assert info.has_audio is (row["generate_audio"] == "yes")
    blob = json.dumps(objects) + c.logs()
    assert "sk-e2e-very-secret-key" not in blob


def test_run_delivers_every_job_once(
    cluster: Any, broker_url: str, manifest: Manifest, tmp_path: Path
) -> None:
    c = cluster(broker_url)
    path = manifest(tmp_path, ROWS)
    done = c.seedq("run", str(path), "--name", "e2e")
    assert done.returncode == 0, done.stdout + done.stderr + c.logs()[-4000:]
    assert "videos and their .json sidecars are in s3://" in done.stdout
    check_delivered(c, ROWS)
    stats = c.sim.stats()
    assert stats["duplicate_enqueues"] == 0
    assert stats["enqueued"] == len(ROWS)
    # A second run of the same manifest pays for nothing.
    again = c.seedq("run", str(path))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "skipped" in again.stdout or "0 job(s) enqueued" in again.stdout
    assert c.sim.stats()["enqueued"] == len(ROWS)


def test_estimate_is_within_one_percent_of_the_bill(
    cluster: Any, manifest: Manifest, tmp_path: Path
) -> None:
    """The provider's live prices differ from the copy shipped with seedq (the simulator
    serves them 37% higher): the plan prices with the live ones, and the run's estimate
    lands within 1% of what the provider bills for its 12 clips, while the shipped copy's
    would be far off; the bills seedq records are the provider's to the cent."""
    c = cluster(price_factor=1.37, fast=True)
    rows = [
        {
            "id": f"priced-{i}",
            "prompt": f"priced clip {i}",
            "input_image": "images/red.png",
            "duration": str(4 + i % 3),
            "resolution": ("480p", "720p")[i % 2],
            "generate_audio": ("no", "yes")[i // 6],
        }
        for i in range(12)
    ]
    ids = [row["id"] for row in rows]
    # The estimates are read while the run goes: once it has ended, its archive compacts
    # the hashes of its delivered, billed jobs (est_cost goes).
    running = c.seedq_background("run", str(manifest(tmp_path, rows)), "--name", "priced")
    estimates: dict[str, str] = {}
    while True:
        estimates |= {j: r["est_cost"] for j, r in c.jobs(ids).items() if r.get("est_cost")}
        try:
            output, _ = running.communicate(timeout=0.05)  # keeps what it read so far
            break
        except subprocess.TimeoutExpired:
            pass
    assert running.returncode == 0, output + c.logs()[-4000:]
    assert "from the provider" in output and "WARNING" not in output
    assert sorted(estimates) == sorted(ids), (estimates, output)
    deadline = time.monotonic() + 60
    while not all(j.get("billed_cost") for j in c.jobs(ids).values()):
        assert time.monotonic() < deadline, c.jobs(ids)
        time.sleep(0.2)
    jobs = c.jobs(ids)
    estimate = sum(float(cost) for cost in estimates.values())
    recorded = sum(float(j["billed_cost"]) for j in jobs.values())
    charged: dict[str, float] = {}
    with httpx.Client(base_url=c.sim.url, headers={"Authorization": f"Bearer {API_KEY}"}) as api:
        page = api.get("/api/ai/generations", params={"status": "succeeded", "page_size": 100})
        charged |= {g["generation_id"]: float(g["cost"]) for g in page.json()["generations"]}
    billed = sum(charged[j["generation_id"]] for j in jobs.values())
    assert abs(estimate - billed) / billed < 0.01, (estimate, billed)
    assert recorded == pytest.approx(billed)
    shipped = estimate / 1.37  # what the shipped prices would have said
    assert abs(shipped - billed) / billed > 0.2
