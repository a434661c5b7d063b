"""Delivery never throws away a paid clip: a playable one with differences from the
request is delivered with warnings, an unplayable one is kept in quarantine (local
directory and S3 alike), and a retried delivery neither quarantines twice nor loses a
copy. Driven as in test_steps: the real simulator over HTTP, the steps called directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import fakeredis
import pytest

from seedq.contract import TASK_DELIVER, JobState
from seedq.dispatch import celery_sender
from storage.base import Storage, sha256_file
from storage.s3 import S3Storage
from tests.fakes import FakeApp
from tests.worker.test_steps import Pipeline, pipeline_on
from worker.delivery import QUARANTINE_PREFIX, deliver_job, quarantine_key, sidecar_key
from worker.errors import InvalidVideo
from worker.job import DONE, Next
from worker.runner import DELIVER, Ending, StepEnd, run_step
from worker.runtime import install_runtime

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    with pipeline_on(fakeredis.FakeRedis(server=fakeredis.FakeServer()), tmp_path) as p:
        yield p


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, pipeline: Pipeline) -> Storage:
    """The pipeline's output store: its local directory, or a bucket on moto."""
    if request.param == "local":
        return pipeline.storage
    client: S3Client = request.getfixturevalue("s3_client")
    bucket: str = request.getfixturevalue("s3_bucket")
    pipeline.rt.storage = S3Storage(bucket, "out", client=client)
    return pipeline.rt.storage


def stored_keys(storage: Storage, pipeline: Pipeline) -> list[str]:
    """Every key under the quarantine prefix, relative to the store's root."""
    if isinstance(storage, S3Storage):
        listed = storage.client.list_objects_v2(
            Bucket=storage.bucket, Prefix=storage.object_key(QUARANTINE_PREFIX + "/")
        )
        names = [item["Key"] for item in listed.get("Contents", [])]
        return sorted(name.removeprefix(storage.prefix + "/") for name in names)
    root = pipeline.storage.root
    return sorted(
        str(path.relative_to(root))
        for path in (root / QUARANTINE_PREFIX).rglob("*")
        if path.is_file()
    )


Download = Callable[..., int]


def junk(data: bytes) -> Download:
    def download(url: str, dest: Path, *, max_bytes: int, timeout_s: float | None = None) -> int:
        dest.write_bytes(data)
        return len(data)

    return download


# -- the pure decision of where a quarantined file goes --------------------------------


def test_quarantine_key_is_one_per_content() -> None:
    a, b = "a" * 64, "b" * 64
    assert quarantine_key("shop/mug.mp4", a) == f"quarantine/shop/mug.{'a' * 16}.mp4"
    assert quarantine_key("shop/mug.mp4", a) == quarantine_key("shop/mug.mp4", a)
    assert quarantine_key("shop/mug.mp4", a) != quarantine_key("shop/mug.mp4", b)
    assert sidecar_key(quarantine_key("mug.mp4", a)) == f"quarantine/mug.{'a' * 16}.json"


# -- a playable clip that differs is delivered, with warnings ---------------------------


def test_audio_not_asked_for_is_delivered_with_a_warning(pipeline: Pipeline) -> None:
    """The simulator renders an audio track (asked for at enqueue); the job's request
    says no audio, as a provider adding audio unasked would leave it. Before issue 10
    this paid clip was thrown away as an invalid video."""
    p = pipeline
    run_id = p.one_job(generate_audio="true")
    assert p.until_generated(run_id, "clip-1") == Next(TASK_DELIVER)
    sent = json.loads(p.job("clip-1")["sent_params"])
    p.rt.store.update_job("clip-1", sent_params=json.dumps({**sent, "generate_audio": False}))

    assert deliver_job(p.rt, run_id, "clip-1") is DONE
    job = p.job("clip-1")
    assert job["state"] == JobState.DELIVERED
    warnings = json.loads(job["warnings"])
    assert len(warnings) == 1 and "has an audio track" in warnings[0]
    side = p.storage.get_json(sidecar_key("clip-1.mp4"))
    assert side is not None and side["warnings"] == warnings and side["video"]["has_audio"]
    assert p.storage.stat("clip-1.mp4") is not None
    assert not (p.storage.root / QUARANTINE_PREFIX).exists()
    p.assert_at_most_once(1)


def test_a_duration_and_ratio_off_are_warnings(pipeline: Pipeline) -> None:
    p = pipeline
    run_id = p.one_job()
    assert p.until_generated(run_id, "clip-1") == Next(TASK_DELIVER)
    sent = json.loads(p.job("clip-1")["sent_params"])
    asked = {**sent, "duration": 9, "aspect_ratio": "1:1"}
    p.rt.store.update_job("clip-1", sent_params=json.dumps(asked))

    assert deliver_job(p.rt, run_id, "clip-1") is DONE
    warnings = json.loads(p.job("clip-1")["warnings"])
    assert p.state("clip-1") is JobState.DELIVERED
    assert [w.split(" ")[0] for w in warnings] == ["duration", "aspect"], warnings


# -- an unplayable one fails, and is kept ------------------------------------------------


def test_unplayable_clip_is_quarantined_with_its_reason(
    pipeline: Pipeline, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = pipeline
    run_id = p.one_job()
    assert p.until_generated(run_id, "clip-1") == Next(TASK_DELIVER)
    bad = b"<html><body>Access Denied</body></html>" * 10
    monkeypatch.setattr(p.rt.provider, "download", junk(bad))

    with pytest.raises(InvalidVideo) as raised:
        deliver_job(p.rt, run_id, "clip-1")
    digest = sha256_file_bytes(p.folder, bad)
    key = quarantine_key("clip-1.mp4", digest)
    assert storage.uri(key) in str(raised.value)
    assert p.job("clip-1")["quarantine_uri"] == storage.uri(key)
    assert stored_keys(storage, p) == sorted([key, sidecar_key(key)])
    reason = storage.get_json(sidecar_key(key))
    assert reason is not None and "does not decode" in reason["reason"]
    assert (reason["job_id"], reason["sha256"], reason["size_bytes"]) == (
        "clip-1",
        digest,
        len(bad),
    )
    assert reason["generation_id"] == p.job("clip-1")["generation_id"]
    copy = p.folder / "copy.mp4"
    assert storage.get_file(key, copy) and copy.read_bytes() == bad
    assert storage.stat("clip-1.mp4") is None and storage.get_json("clip-1.json") is None


def test_a_retried_delivery_neither_quarantines_twice_nor_loses_a_copy(
    pipeline: Pipeline, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = pipeline
    run_id = p.one_job()
    assert p.until_generated(run_id, "clip-1") == Next(TASK_DELIVER)
    first, second = b"garbage" * 100, b"other garbage" * 100
    monkeypatch.setattr(p.rt.provider, "download", junk(first))
    with pytest.raises(InvalidVideo):
        deliver_job(p.rt, run_id, "clip-1")
    key = quarantine_key("clip-1.mp4", sha256_file_bytes(p.folder, first))
    recorded = storage.get_json(sidecar_key(key))

    # The same bytes again (a redelivered message): the same key, the first record kept.
    p.clock.offset_s += 60
    with pytest.raises(InvalidVideo):
        deliver_job(p.rt, run_id, "clip-1")
    assert stored_keys(storage, p) == sorted([key, sidecar_key(key)])
    assert storage.get_json(sidecar_key(key)) == recorded

    # Other bytes (a fresh link served something else): both kept.
    monkeypatch.setattr(p.rt.provider, "download", junk(second))
    with pytest.raises(InvalidVideo):
        deliver_job(p.rt, run_id, "clip-1")
    other = quarantine_key("clip-1.mp4", sha256_file_bytes(p.folder, second))
    assert stored_keys(storage, p) == sorted([key, sidecar_key(key), other, sidecar_key(other)])


def test_the_failed_job_names_where_its_clip_is_kept(
    pipeline: Pipeline, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = pipeline
    install_runtime(p.rt)
    try:
        run_id = p.one_job()
        assert p.until_generated(run_id, "clip-1") == Next(TASK_DELIVER)
        monkeypatch.setattr(p.rt.provider, "download", junk(b"\x00" * 50))
        end = run_step(p.rt, celery_sender(FakeApp()), DELIVER, run_id, "clip-1")
    finally:
        install_runtime(None)
    job = p.job("clip-1")
    assert job["state"] == JobState.FAILED and job["failed_step"] == "deliver"
    assert job["error"].endswith(f"kept at {job['quarantine_uri']}")
    # Its task ends in FAILURE, and Flower shows where the clip is kept.
    assert end == StepEnd(Ending.FAILED, job["error"])
    assert storage.stat(job["quarantine_uri"].split("/out/", 1)[1]) is not None


def sha256_file_bytes(folder: Path, data: bytes) -> str:
    path = folder / "digest.bin"
    path.write_bytes(data)
    return sha256_file(path)
