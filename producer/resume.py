"""Which jobs a directory already holds: a delivered clip's JSON sidecar is the proof.

Running a manifest again into the same output directory must not pay again for a clip
that is there. The job store knows, while it lasts; the sidecar beside each video knows
for good (it is written after the video is stored, before the job is marked delivered).
It proves a job delivered when it names the same job, the same model and parameters
(the job's fingerprint, recomputed from what the sidecar recorded, both with their URL
credentials redacted as a sidecar shows them), came from the same
provider (a clip of the simulator is no proof for a paid run), and the video beside it
has the size the sidecar recorded.
"""

from __future__ import annotations

from typing import Any

from producer.jobs import JobSpec, content_hash
from seedq.credentials import redacted_params


def sidecar_proves_delivered(
    job: JobSpec, sidecar: dict[str, Any] | None, *, video_bytes: int | None, provider_url: str
) -> bool:
    """True when ``sidecar`` (None: absent) and a video of ``video_bytes`` (None: absent)
    at the job's output key show this very job delivered by ``provider_url``."""
    if sidecar is None or video_bytes is None:
        return False
    if sidecar.get("job_id") != job.id or sidecar.get("provider") != provider_url.rstrip("/"):
        return False
    model, params = sidecar.get("model"), sidecar.get("params")
    if not isinstance(model, str) or not isinstance(params, dict):
        return False
    # A sidecar shows the parameters with URL credentials redacted: compare them so, on
    # both sides (an older sidecar that kept a signature redacts the same way).
    shown = content_hash(job.model, redacted_params(job.params), job.output_key)
    if content_hash(model, redacted_params(params), job.output_key) != shown:
        return False
    video = sidecar.get("video")
    recorded = video.get("size_bytes") if isinstance(video, dict) else None
    return isinstance(recorded, int) and recorded == video_bytes
