"""A clip's sidecar proves its job delivered only for the same job, parameters, provider
and video (producer.resume): anything else is generated again, never skipped."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from producer.jobs import JobSpec
from producer.resume import sidecar_proves_delivered

PROVIDER = "https://hub.oxen.ai"
JOB = JobSpec(
    id="mug",
    source="m.csv",
    line=2,
    model="bytedance-seedance-2-0-image-to-video",
    params={"prompt": "a mug turns", "input_image": "/imgs/mug.png", "duration": 4},
    output_key="clips/mug.mp4",
)


def sidecar(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "job_id": JOB.id,
        "run_id": "r1",
        "model": JOB.model,
        "provider": PROVIDER,
        "params": copy.deepcopy(JOB.params),
        "generation_id": "g1",
        "video": {"size_bytes": 1234, "sha256": "ab"},
    }
    doc.update(changes)
    return doc


def test_the_same_job_delivered_by_this_provider_is_proven() -> None:
    assert sidecar_proves_delivered(JOB, sidecar(), video_bytes=1234, provider_url=PROVIDER)
    # A trailing slash in SEEDQ_PROVIDER_URL is the same provider.
    assert sidecar_proves_delivered(JOB, sidecar(), video_bytes=1234, provider_url=PROVIDER + "/")


@pytest.mark.parametrize(
    ("doc", "video_bytes"),
    [
        (None, 1234),  # no sidecar
        (sidecar(), None),  # the video is gone
        (sidecar(), 999),  # the video is not the one the sidecar describes
        (sidecar(job_id="other"), 1234),
        (sidecar(model="bytedance-seedance-2-0-mini-image-to-video"), 1234),
        (sidecar(params={**JOB.params, "prompt": "a mug falls"}), 1234),  # parameters changed
        (sidecar(provider="http://127.0.0.1:8100"), 1234),  # a simulator's clip
        (sidecar(provider=None), 1234),  # a sidecar that does not say whose clip it is
        (sidecar(params="not a dict"), 1234),
        (sidecar(video={"size_bytes": "1234"}), 1234),
        (sidecar(video=None), 1234),
    ],
)
def test_anything_else_is_no_proof(doc: dict[str, Any] | None, video_bytes: int | None) -> None:
    assert not sidecar_proves_delivered(JOB, doc, video_bytes=video_bytes, provider_url=PROVIDER)
