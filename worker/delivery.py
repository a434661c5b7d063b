"""The deliver step: stream the result to a temporary file, verify it, store it with a
JSON sidecar, and only then mark the job delivered. Every part is idempotent, so a
redelivered task (a worker killed mid-upload) finishes the job without a second copy."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from seedq.contract import JobState
from seedq.modelinfo import billed_seconds, estimate_cost
from worker.provider.errors import ResultUrlExpired
from worker.runtime import Runtime
from worker.steps import DONE, Job, Next
from worker.storage.base import sha256_file
from worker.submitting import load
from worker.verify import VideoInfo, verify_video

log = logging.getLogger(__name__)
VIDEO_TYPE = "video/mp4"


def sidecar_key(output_key: str) -> str:
    return output_key.removesuffix(".mp4") + ".json"


def deliver_job(rt: Runtime, run_id: str, job_id: str) -> Next:
    job = load(rt, run_id, job_id)
    if job is None or job.state is not JobState.GENERATED:
        return DONE
    rt.admission.touch_deliveries([job_id])  # alive: the tick need not re-drive it yet
    with tempfile.TemporaryDirectory(prefix="seedq-") as folder:
        path = Path(folder) / "video.mp4"
        _download(rt, job, path)
        info = verify_video(path, job.sent_params, tolerance_s=rt.settings.verify_tolerance_s)
        digest = sha256_file(path)
        stored = rt.storage.put_file(job.output_key, path, sha256=digest, content_type=VIDEO_TYPE)
        cost = round(job_cost(rt, job, info) + killed_cost(job), 6)
        rt.storage.put_json(sidecar_key(job.output_key), sidecar(rt, job, info, digest, cost))
    rt.store.move(
        job.id,
        job.run_id,
        JobState.DELIVERED,
        expect=[JobState.GENERATED],
        output_uri=stored.uri,
        size_bytes=info.size_bytes,
        sha256=digest,
        duration_s=info.duration_s,
        cost=cost,
        delivered_at=rt.now(),
    )
    return DONE


def _download(rt: Runtime, job: Job, path: Path) -> None:
    url = job.raw.get("result_url", "")
    rt.store.count_calls(job.id, 1)
    try:
        rt.provider.download(url, path, max_bytes=rt.settings.max_video_bytes)
    except ResultUrlExpired:
        # Presigned links expire; a fresh GET of the generation signs a new one.
        assert job.generation_id is not None
        rt.store.count_calls(job.id, 2)
        fresh = rt.provider.get(job.generation_id).result_url or url
        rt.store.update_job(job.id, result_url=fresh)
        rt.provider.download(fresh, path, max_bytes=rt.settings.max_video_bytes)


def job_cost(rt: Runtime, job: Job, info: VideoInfo) -> float:
    params = job.params
    requested = int(params.get("duration", -1))
    seconds = billed_seconds(requested, max(1, round(info.duration_s)))
    pricing = rt.catalog(job.model).pricing
    return round(
        estimate_cost(
            pricing,
            seconds=seconds,
            resolution=str(params.get("resolution")),
            generate_audio=bool(params.get("generate_audio")),
        ),
        6,
    )


def killed_cost(job: Job) -> float:
    """What the generation killed for being stuck is taken to have cost (its estimate):
    the job paid for it too (worker.unsticking)."""
    return job.number("stuck_est_cost") if job.raw.get("stuck_generation_id") else 0.0


def sidecar(rt: Runtime, job: Job, info: VideoInfo, digest: str, cost: float) -> dict[str, Any]:
    """What an operator wants beside each clip: never a secret, never a presigned URL."""
    raw = job.raw
    return {
        "job_id": job.id,
        "run_id": job.run_id,
        "model": job.model,
        "params": job.params,
        "source": {"manifest": job.spec.get("source"), "line": job.spec.get("line")},
        "generation_id": job.generation_id,
        "timings": {
            name: float(raw[name])
            for name in ("created_at", "submit_started_at", "submitted_at", "generated_at")
            if raw.get(name)
        }
        | {"delivered_at": rt.now()},
        "video": {
            "size_bytes": info.size_bytes,
            "sha256": digest,
            "duration_s": info.duration_s,
            "width": info.width,
            "height": info.height,
            "has_audio": info.has_audio,
            "codec": info.video_codec,
        },
        "cost": {"amount": cost, "currency": rt.catalog(job.model).pricing.currency},
        # A stuck generation killed and retried (worker.unsticking): its cost is in "cost".
        "stuck_retry": (
            {"killed_generation_id": job.raw["stuck_generation_id"], "retries": 1}
            if job.raw.get("stuck_generation_id")
            else None
        ),
        # Read afresh: ``job`` was loaded before the download (and the GET and second
        # download of an expired link) were counted.
        "provider_calls": int(float(rt.store.job(job.id).get("provider_calls", 0))),
    }
