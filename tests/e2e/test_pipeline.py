"""End to end: `seedq run` with real `celery worker` processes, a real broker, the
simulator over HTTP and an S3-protocol server delivers every job, once."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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
