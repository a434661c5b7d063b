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
from seedq.refs import MAX_OUTPUT_SEGMENT_BYTES, check_output_key
from storage.base import Storage, sha256_file
from storage.s3 import S3Storage
from tests.fakes import FakeApp
from tests.worker.test_steps import Pipeline, pipeline_on
from worker.delivery import (
    QUARANTINE_PREFIX,
    deliver_job,
    quarantine_key,
    sidecar_key,
    undeliverable_key,
)
from worker.errors import InvalidVideo
from worker.job import DONE, Next
from worker.runner import DELIVER, SUBMIT, Ending, JobStep, StepEnd, run_step
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


# -- a playable clip that cannot go to its key is kept (issue 13) ------------------------


def step(p: Pipeline, which: JobStep, run_id: str, job_id: str) -> StepEnd:
    """One step as its Celery task runs it: a JobFailed fails the job with its reason."""
    install_runtime(p.rt)
    try:
        return run_step(p.rt, celery_sender(FakeApp()), which, run_id, job_id)
    finally:
        install_runtime(None)


def set_output_key(p: Pipeline, job_id: str, key: str) -> None:
    """Give a registered job an output key validation would refuse today (a job of an
    older release, or a store with shorter names than the limits assume)."""
    spec = json.loads(p.job(job_id)["spec"])
    p.rt.store.update_job(job_id, spec=json.dumps({**spec, "output_key": key}))


def assert_kept(p: Pipeline, storage: Storage, job_id: str, why: str) -> dict[str, object]:
    """The job failed at delivery naming where its clip is, and the clip is there, whole,
    with its reason and the sidecar it would have had; the reason record is returned."""
    job = p.job(job_id)
    assert job["state"] == JobState.FAILED and job["failed_step"] == "deliver", job
    assert why in job["error"] and job["error"].endswith(f"kept at {job['quarantine_uri']}")
    key = job["quarantine_uri"].split("/out/", 1)[1]
    assert key.startswith(f"{QUARANTINE_PREFIX}/_undeliverable/{job_id}.")
    copy = p.folder / f"kept-{job_id}.mp4"
    assert storage.get_file(key, copy)
    digest = sha256_file(copy)
    assert key == undeliverable_key(job_id, digest)
    reason = storage.get_json(sidecar_key(key))
    assert reason is not None and why in str(reason["reason"])
    side = reason["sidecar"]
    assert isinstance(side, dict) and side["job_id"] == job_id
    assert side["video"]["sha256"] == digest and side["generation_id"] == job["generation_id"]
    return reason


def too_long_key(storage: Storage) -> str:
    """A key the store cannot write: for a directory, 246 bytes fit a name but not its
    temporary file (the reported case); for S3, more than 1024 bytes with the prefix."""
    if isinstance(storage, S3Storage):
        return "/".join(["b" * 200] * 6) + ".mp4"
    return "b" * 246 + ".mp4"


def test_a_key_the_store_refuses_keeps_the_paid_clip(pipeline: Pipeline, storage: Storage) -> None:
    """Before issue 13 every delivery failed with "File name too long" (retried as an
    outage until it gave up) and the paid clip was lost."""
    p = pipeline
    run_id = p.one_job()
    assert p.until_generated(run_id, "clip-1") == Next(TASK_DELIVER)
    set_output_key(p, "clip-1", too_long_key(storage))

    end = step(p, DELIVER, run_id, "clip-1")
    assert end.ending is Ending.FAILED, end
    why = "S3 allows at most 1024" if isinstance(storage, S3Storage) else "File name too long"
    reason = assert_kept(p, storage, "clip-1", why)
    assert reason["output_key"] == too_long_key(storage)
    # A retried delivery (`seedq retry`) keeps the same copy, once.
    p.rt.store.move("clip-1", run_id, JobState.GENERATED, expect=[JobState.FAILED])
    assert step(p, DELIVER, run_id, "clip-1").ending is Ending.FAILED
    kept = p.job("clip-1")["quarantine_uri"].split("/out/", 1)[1]
    assert stored_keys(storage, p) == sorted([kept, sidecar_key(kept)])


def test_the_longest_name_allowed_fits_every_name_derived_from_it(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The validation's limit is real: at its longest (and with ``.MP4``, which keeps the
    longest derived names), the clip, its sidecar, their temporary files and a
    quarantined copy with its reason are all written in a real directory."""
    p = pipeline
    longest = check_output_key("d/" + "a" * (MAX_OUTPUT_SEGMENT_BYTES - 4) + ".MP4")
    run_id = p.one_job("clip-1", output=longest)
    assert p.until_generated(run_id, "clip-1") == Next(TASK_DELIVER)
    assert deliver_job(p.rt, run_id, "clip-1") is DONE
    assert p.storage.get_json(sidecar_key(longest)) is not None

    other = longest.replace("/a", "/b")
    run_id = p.one_job("clip-2", output=other, prompt="a blue lamp glows")
    assert p.until_generated(run_id, "clip-2") == Next(TASK_DELIVER)
    monkeypatch.setattr(p.rt.provider, "download", junk(b"not a video" * 50))
    with pytest.raises(InvalidVideo):
        deliver_job(p.rt, run_id, "clip-2")
    kept = quarantine_key(other, sha256_file_bytes(p.folder, b"not a video" * 50))
    assert p.job("clip-2")["quarantine_uri"] == p.storage.uri(kept)
    assert p.storage.get_json(sidecar_key(kept)) is not None


def test_a_folder_where_the_clip_goes_keeps_the_paid_clip(pipeline: Pipeline) -> None:
    """``clip-1.mp4`` is a folder (another run's ``clip-1.mp4/y.mp4``): "Is a directory"
    on every try, before; now kept at once."""
    p = pipeline
    run_id = p.one_job()
    assert p.until_generated(run_id, "clip-1") == Next(TASK_DELIVER)
    (p.storage.root / "clip-1.mp4" / "y.mp4").parent.mkdir(parents=True)
    assert step(p, DELIVER, run_id, "clip-1").ending is Ending.FAILED
    assert_kept(p, p.storage, "clip-1", "a folder is where the file should be")


def two_jobs_one_key(p: Pipeline, **second: str) -> tuple[str, str]:
    """clip-1 and clip-2 of two runs, both generated, both for ``shared.mp4``."""
    first = p.one_job("clip-1", output="shared.mp4")
    again = p.one_job("clip-2", output="shared.mp4", prompt="a blue lamp glows", **second)
    for run_id, job_id in ((first, "clip-1"), (again, "clip-2")):
        assert p.until_generated(run_id, job_id) == Next(TASK_DELIVER)
    return first, again


def test_another_jobs_clip_at_the_key_is_never_overwritten(
    pipeline: Pipeline, storage: Storage
) -> None:
    """Before issue 13 a later run with another job id silently replaced a delivered
    clip and its sidecar."""
    p = pipeline
    first, again = two_jobs_one_key(p)
    assert deliver_job(p.rt, first, "clip-1") is DONE
    delivered = storage.stat("shared.mp4")
    assert delivered is not None

    assert step(p, DELIVER, again, "clip-2").ending is Ending.FAILED
    assert_kept(p, storage, "clip-2", "already holds the clip of job 'clip-1'")
    assert storage.stat("shared.mp4") == delivered
    side = storage.get_json("shared.json")
    assert side is not None and side["job_id"] == "clip-1"
    assert p.state("clip-1") is JobState.DELIVERED


def test_a_file_seedq_did_not_deliver_is_never_overwritten(
    pipeline: Pipeline, storage: Storage
) -> None:
    p = pipeline
    run_id = p.one_job()
    assert p.until_generated(run_id, "clip-1") == Next(TASK_DELIVER)
    theirs = p.folder / "theirs.mp4"
    theirs.write_bytes(b"someone's own edit")
    storage.put_file("clip-1.mp4", theirs, sha256=sha256_file(theirs), content_type="video/mp4")

    assert step(p, DELIVER, run_id, "clip-1").ending is Ending.FAILED
    assert_kept(p, storage, "clip-1", "already holds a file without a seedq sidecar")
    copy = p.folder / "copy.mp4"
    assert storage.get_file("clip-1.mp4", copy) and copy.read_bytes() == theirs.read_bytes()


def test_overwrite_asked_for_replaces_another_jobs_clip(
    pipeline: Pipeline, storage: Storage
) -> None:
    p = pipeline
    first, again = two_jobs_one_key(p, overwrite="yes")
    assert deliver_job(p.rt, first, "clip-1") is DONE
    assert deliver_job(p.rt, again, "clip-2") is DONE
    side = storage.get_json("shared.json")
    assert side is not None and side["job_id"] == "clip-2"
    assert storage.stat("shared.mp4").sha256 == p.job("clip-2")["sha256"]  # type: ignore[union-attr]


def test_the_same_jobs_own_earlier_clip_is_replaced(pipeline: Pipeline, storage: Storage) -> None:
    """A job regenerated (``--force``) replaces its own clip; an interrupted delivery's
    clip without its sidecar yet is finished, not refused."""
    p = pipeline
    run_id = p.one_job()
    assert p.until_generated(run_id, "clip-1") == Next(TASK_DELIVER)
    old = p.folder / "old.mp4"
    old.write_bytes(b"the clip of an earlier generation")
    storage.put_file("clip-1.mp4", old, sha256=sha256_file(old), content_type="video/mp4")
    storage.put_json("clip-1.json", {"job_id": "clip-1", "run_id": "earlier"})
    assert deliver_job(p.rt, run_id, "clip-1") is DONE
    assert storage.stat("clip-1.mp4").sha256 == p.job("clip-1")["sha256"]  # type: ignore[union-attr]

    # Its own bytes already there without a sidecar (a crash between the two writes).
    p.rt.store.move("clip-1", run_id, JobState.GENERATED, expect=[JobState.DELIVERED])
    p.storage.root.joinpath("clip-1.json").unlink(missing_ok=True)
    if isinstance(storage, S3Storage):
        storage.client.delete_object(Bucket=storage.bucket, Key=storage.object_key("clip-1.json"))
    assert deliver_job(p.rt, run_id, "clip-1") is DONE
    assert p.state("clip-1") is JobState.DELIVERED


def test_submit_refuses_a_key_holding_another_jobs_clip_before_paying(
    pipeline: Pipeline, storage: Storage
) -> None:
    """The cheapest place: nothing is generated for a clip that could not be delivered."""
    p = pipeline
    first = p.one_job("clip-1", output="shared.mp4")
    assert p.until_generated(first, "clip-1") == Next(TASK_DELIVER)
    assert deliver_job(p.rt, first, "clip-1") is DONE
    again = p.one_job("clip-2", output="shared.mp4", prompt="a blue lamp glows")

    end = step(p, SUBMIT, again, "clip-2")
    assert end.ending is Ending.FAILED, end
    job = p.job("clip-2")
    assert job["failed_step"] == "submit" and not job.get("generation_id")
    assert "already holds the clip of job 'clip-1'" in job["error"]
    assert "nothing was paid" in job["error"]
    p.assert_at_most_once(1)

    # Asked for, it is generated (and will replace it).
    third = p.one_job("clip-3", output="shared.mp4", prompt="a green cup", overwrite="true")
    assert p.until_generated(third, "clip-3") == Next(TASK_DELIVER)
    p.assert_at_most_once(2)
