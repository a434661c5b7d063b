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

A clip that plays but cannot be stored at its output key is kept the same way, under
:data:`UNDELIVERABLE_PREFIX` and named by its job (the key is what failed), and the job
fails with :class:`~worker.errors.Undeliverable` naming where: the store refused the
name for good (:class:`~storage.errors.KeyRejected`: too long, a file or folder in the
way), or the key holds another job's clip (its sidecar names another job, or it has
none) and overwriting it was not asked for (the job field ``overwrite``). Moving the
other clip away then ``seedq retry`` delivers it to its key without paying again.

Whether a key holds another job's clip is checked just before the write; two runs
delivering different clips to one key at the same instant can still both write. The
submit step checks the same (:func:`held_by_another`) before paying, which keeps
sequential runs from ever getting here.
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
from seedq.credentials import redacted_params
from seedq.modelinfo import billed_seconds, estimate_cost
from seedq.refs import sidecar_key as sidecar_key  # re-exported: callers import it here
from storage.base import StoredObject, sha256_file
from storage.errors import KeyRejected
from worker.errors import InvalidVideo, Undeliverable
from worker.job import DONE, Job, Next
from worker.runtime import Runtime
from worker.submitting import load
from worker.verify import VideoInfo, inspect_video

log = logging.getLogger(__name__)
VIDEO_TYPE = "video/mp4"
QUARANTINE_TYPE = "application/octet-stream"  # it is not a video we can vouch for
QUARANTINE_PREFIX = "quarantine"
UNDELIVERABLE_PREFIX = f"{QUARANTINE_PREFIX}/_undeliverable"
DIGEST_CHARS = 16  # of the SHA-256 in a quarantine key: distinct downloads never collide


def quarantine_key(output_key: str, sha256: str) -> str:
    """Where an unplayable download of ``output_key`` is kept: one key per content."""
    return f"{QUARANTINE_PREFIX}/{output_key.removesuffix('.mp4')}.{sha256[:DIGEST_CHARS]}.mp4"


def undeliverable_key(job_id: str, sha256: str) -> str:
    """Where a clip that cannot be stored at its output key is kept. Named by its job
    (at most 128 safe characters), never by the key that failed: it always fits."""
    return f"{UNDELIVERABLE_PREFIX}/{job_id}.{sha256[:DIGEST_CHARS]}.mp4"


def held_by_another(
    job_id: str, video: StoredObject | None, sidecar: Any, *, sha256: str | None = None
) -> str | None:
    """Why the object at an output key is not job ``job_id``'s to replace, from the
    ``sidecar`` beside it; None when the key is free or holds this job's own clip.

    A sidecar naming another job makes it that job's clip, even with the same bytes (the
    sidecar would change hands). A file without a sidecar is nobody's to overwrite,
    unless it holds the very bytes ``sha256`` being delivered: this job's own delivery,
    interrupted between the clip and its sidecar."""
    if video is None:
        return None
    if not isinstance(sidecar, dict):
        if sha256 is not None and video.sha256 == sha256:
            return None
        return f"{video.uri} already holds a file without a seedq sidecar"
    owner = sidecar.get("job_id")
    if owner == job_id:
        return None
    return f"{video.uri} already holds the clip of job {owner!r} (run {sidecar.get('run_id')!r})"


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
        cost = round(job_cost(rt, job, info) + killed_cost(job), 6)
        side = sidecar(rt, job, info, digest, cost, warnings)
        stored = store_clip(rt, job, path, digest, side)
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


def store_clip(
    rt: Runtime, job: Job, path: Path, digest: str, side: dict[str, Any]
) -> StoredObject:
    """Store the clip and its sidecar at the job's output key. When that cannot be, keep
    the clip under :func:`undeliverable_key` and raise Undeliverable naming where."""
    try:
        existing = rt.storage.stat(job.output_key)
        taken = None
        if existing is not None and not overwrites(job):
            other = rt.storage.get_json(sidecar_key(job.output_key))
            taken = held_by_another(job.id, existing, other, sha256=digest)
        if taken is None:
            stored = rt.storage.put_file(
                job.output_key, path, sha256=digest, content_type=VIDEO_TYPE
            )
            rt.storage.put_json(sidecar_key(job.output_key), side)
            return stored
        problem = f"{taken}; not overwritten"
    except KeyRejected as exc:
        problem = str(exc)
    key = undeliverable_key(job.id, digest)
    uri = keep(rt, job, path, key, problem, content_type=VIDEO_TYPE, sidecar=side)
    raise Undeliverable(f"{problem}; the paid clip is kept at {uri}")


def overwrites(job: Job) -> bool:
    """Whether the job may replace another job's clip at its key (job field
    ``overwrite``, off unless the manifest asks)."""
    return bool(job.spec.get("overwrite"))


def quarantine(rt: Runtime, job: Job, path: Path, problem: InvalidVideo) -> InvalidVideo:
    """Keep an unplayable download, with its reason beside it; the error to fail the job
    with, naming where it is. A storage failure here raises (transient): the delivery is
    tried again rather than failing the job with the paid file nowhere."""
    digest = sha256_file(path)
    try:
        uri = keep(rt, job, path, quarantine_key(job.output_key, digest), str(problem))
    except KeyRejected:  # the output key's name fits no store: its job's name does
        uri = keep(rt, job, path, undeliverable_key(job.id, digest), str(problem))
    return InvalidVideo(f"{problem}; the downloaded file is kept at {uri}")


def keep(
    rt: Runtime,
    job: Job,
    path: Path,
    key: str,
    reason: str,
    *,
    content_type: str = QUARANTINE_TYPE,
    sidecar: dict[str, Any] | None = None,
) -> str:
    """Store a paid file that is not delivered at ``key``, with a JSON of ``reason`` (and
    the ``sidecar`` it would have had) beside it; its URI, also noted in the job's
    ``quarantine_uri``."""
    digest = sha256_file(path)
    stored = rt.storage.put_file(key, path, sha256=digest, content_type=content_type)
    reason_key = sidecar_key(key)
    # Written once: a retry that downloaded the same bytes keeps the first record.
    if rt.storage.get_json(reason_key) is None:
        record = {
            "reason": reason,
            "job_id": job.id,
            "run_id": job.run_id,
            "model": job.model,
            "generation_id": job.generation_id,
            "output_key": job.output_key,
            "size_bytes": stored.size,
            "sha256": digest,
            "quarantined_at": rt.now(),
        }
        rt.storage.put_json(reason_key, record | ({"sidecar": sidecar} if sidecar else {}))
    rt.store.update_job(job.id, quarantine_uri=stored.uri)
    log.warning("job %s: paid file kept at %s: %s", job.id, stored.uri, reason)
    return stored.uri


def _download(rt: Runtime, job: Job, path: Path) -> None:
    url = job.raw.get("result_url", "")
    rt.store.count_calls(job.id, 1)
    try:
        rt.provider.download(url, path, max_bytes=rt.settings.max_video_bytes)
    except ResultUrlExpired:
        # Presigned links expire; a fresh GET of the generation signs a new one.
        # bandit B101: narrows the type: a job downloads only once it has a generation.
        assert job.generation_id is not None  # nosec B101
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
        # The spec keeps a presigned input URL whole, for a resend; shown, never.
        "params": redacted_params(job.params),
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
