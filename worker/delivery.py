"""The deliver step: stream the result to a temporary file, verify it, store it with a
JSON sidecar, and only then mark the job delivered. Every part is idempotent, so a
redelivered task (a worker killed mid-upload) finishes the job without a second copy.

The clip was paid for when the provider made it, so it is never thrown away. One that
plays is delivered, its differences from the request recorded as warnings (job field
``warnings``, a JSON list; the sidecar; the reports). One that does not play is stored
under :data:`QUARANTINE_PREFIX` with a JSON of its reason beside it *before* the job
fails, and the failure names where it is kept. The quarantine key carries the file's
digest: a retried delivery that downloads the same bytes finds them stored and writes
nothing; different bytes get a key of their own, so neither copy is lost.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from provider.errors import ResultUrlExpired
from seedq.billing import billing_status
from seedq.contract import JobState
from seedq.modelinfo import billed_seconds, estimate_cost
from seedq.refs import sidecar_key as sidecar_key  # re-exported: callers import it here
from storage.base import sha256_file
from worker.errors import InvalidVideo
from worker.job import DONE, Job, Next
from worker.runtime import Runtime
from worker.submitting import load
from worker.verify import VideoInfo, inspect_video

log = logging.getLogger(__name__)
VIDEO_TYPE = "video/mp4"
QUARANTINE_TYPE = "application/octet-stream"  # it is not a video we can vouch for
QUARANTINE_PREFIX = "quarantine"
DIGEST_CHARS = 16  # of the SHA-256 in a quarantine key: distinct downloads never collide


def quarantine_key(output_key: str, sha256: str) -> str:
    """Where an unplayable download of ``output_key`` is kept: one key per content."""
    return f"{QUARANTINE_PREFIX}/{output_key.removesuffix('.mp4')}.{sha256[:DIGEST_CHARS]}.mp4"


def deliver_job(rt: Runtime, run_id: str, job_id: str) -> Next:
    job = load(rt, run_id, job_id)
    if job is None or job.state is not JobState.GENERATED:
        return DONE
    rt.leases.touch_deliveries([job_id])  # alive: the tick need not re-drive it yet
    with tempfile.TemporaryDirectory(prefix="seedq-") as folder:
        path = Path(folder) / "video.mp4"
        _download(rt, job, path)
        try:
            verified = inspect_video(
                path, job.sent_params, tolerance_s=rt.settings.verify_tolerance_s
            )
        except InvalidVideo as exc:
            raise quarantine(rt, job, path, exc) from None
        info, warnings = verified.info, verified.warnings
        if warnings:
            log.warning("job %s delivered with warnings: %s", job.id, "; ".join(warnings))
        digest = sha256_file(path)
        stored = rt.storage.put_file(job.output_key, path, sha256=digest, content_type=VIDEO_TYPE)
        cost = round(job_cost(rt, job, info) + killed_cost(job), 6)
        side = sidecar(rt, job, info, digest, cost, warnings)
        rt.storage.put_json(sidecar_key(job.output_key), side)
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
        warnings=json.dumps(warnings),
        delivered_at=rt.now(),
    )
    return DONE


def quarantine(rt: Runtime, job: Job, path: Path, problem: InvalidVideo) -> InvalidVideo:
    """Keep an unplayable download, with its reason beside it; the error to fail the job
    with, naming where it is. A storage failure here raises (transient): the delivery is
    tried again rather than failing the job with the paid file nowhere."""
    digest = sha256_file(path)
    key = quarantine_key(job.output_key, digest)
    stored = rt.storage.put_file(key, path, sha256=digest, content_type=QUARANTINE_TYPE)
    reason_key = sidecar_key(key)
    # Written once: a retry that downloaded the same bytes keeps the first record.
    if rt.storage.get_json(reason_key) is None:
        rt.storage.put_json(
            reason_key,
            {
                "reason": str(problem),
                "job_id": job.id,
                "run_id": job.run_id,
                "model": job.model,
                "generation_id": job.generation_id,
                "output_key": job.output_key,
                "size_bytes": stored.size,
                "sha256": digest,
                "quarantined_at": rt.now(),
            },
        )
    rt.store.update_job(job.id, quarantine_uri=stored.uri)
    log.warning("job %s: unplayable video kept at %s: %s", job.id, stored.uri, problem)
    return InvalidVideo(f"{problem}; the downloaded file is kept at {stored.uri}")


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
    """What the generation killed for being stuck is estimated to have cost (one
    generation's estimate): the job's estimate counts it too (worker.unsticking)."""
    return job.number("stuck_est_cost") if job.raw.get("stuck_generation_id") else 0.0


def sidecar(
    rt: Runtime,
    job: Job,
    info: VideoInfo,
    digest: str,
    cost: float,
    warnings: list[str],
) -> dict[str, Any]:
    """What an operator wants beside each clip: never a secret, never a presigned URL."""
    raw = job.raw
    # Read afresh: ``job`` was loaded before the download (and the GET and second
    # download of an expired link) were counted, and the biller may have run since.
    fresh = rt.store.job(job.id)
    return {
        "job_id": job.id,
        "run_id": job.run_id,
        "model": job.model,
        # Whose clip this is: a rerun into the same folder skips it only for the same
        # provider (producer.resume), never taking a simulator's clip for a paid one.
        "provider": rt.settings.provider_url.rstrip("/"),
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
        "cost": cost_section(fresh, cost, rt.catalog(job.model).pricing.currency),
        # A stuck generation killed and retried (worker.unsticking): its estimate is in
        # the cost's "estimated", its bill in "billed" (billing sums both generations).
        "stuck_retry": (
            {"killed_generation_id": job.raw["stuck_generation_id"], "retries": 1}
            if job.raw.get("stuck_generation_id")
            else None
        ),
        "warnings": warnings,
        "provider_calls": int(float(fresh.get("provider_calls", 0))),
    }


def cost_section(raw: dict[str, str], estimated: float, currency: str) -> dict[str, Any]:
    """The sidecar's ``cost``: seedq's estimate beside what the provider billed
    (``billed`` None while ``billed_status`` is ``pending`` or ``unknown``)."""
    billed = raw.get("billed_cost")
    return {
        "estimated": estimated,
        "billed": float(billed) if billed else None,
        "billed_status": billing_status(raw),
        "currency": currency,
    }
