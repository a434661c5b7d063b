"""The choices `seedq run` makes for a paid run on one machine (cli.local_run, cli.run),
without starting anything: which run it resumes, which jobs the folder already holds,
where the state lives, and the local images a remote provider could never fetch."""

from __future__ import annotations

import json
from pathlib import Path

import fakeredis
import pytest

from cli.local_run import (
    SkipCount,
    refuse_unreachable_inputs,
    resumable_run,
    skip_delivered,
    state_root,
)
from producer.jobs import JobSpec
from seedq.errors import ConfigError
from seedq.settings import Settings
from seedq.store import JobStore

PROVIDER = "https://hub.oxen.ai"


def job(i: int, image: str = "https://images.example.com/mug.png") -> JobSpec:
    return JobSpec(
        id=f"clip-{i}",
        source="/m/clips.csv",
        line=i + 2,
        model="bytedance-seedance-2-0-image-to-video",
        params={"prompt": f"clip {i}", "input_image": image, "duration": 4},
        output_key=f"clips/clip-{i}.mp4",
    )


def deliver(out: Path, spec: JobSpec, *, provider: str = PROVIDER) -> None:
    """What the deliver step leaves in a folder: the video, then its sidecar."""
    video = out / spec.output_key
    video.parent.mkdir(parents=True, exist_ok=True)
    video.write_bytes(b"\0" * 100)
    sidecar = {
        "job_id": spec.id,
        "model": spec.model,
        "provider": provider,
        "params": spec.params,
        "video": {"size_bytes": 100},
    }
    video.with_suffix(".json").write_text(json.dumps(sidecar))


def test_only_jobs_proven_by_their_sidecars_are_skipped(tmp_path: Path) -> None:
    settings = Settings(output=str(tmp_path), provider_url=PROVIDER)
    jobs = [job(i) for i in range(4)]
    deliver(tmp_path, jobs[0])
    deliver(tmp_path, jobs[1], provider="http://127.0.0.1:8100")  # a demo's clip
    deliver(tmp_path, jobs[2])
    (tmp_path / jobs[2].output_key).unlink()  # its video is gone
    skipped = SkipCount()
    kept = list(skip_delivered(jobs, settings, PROVIDER, skipped))
    assert [j.id for j in kept] == ["clip-1", "clip-2", "clip-3"]
    assert skipped.n == 1


def test_the_latest_run_is_resumed_only_for_the_same_manifests() -> None:
    store = JobStore(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    assert resumable_run(store, [Path("clips.csv")]) is None
    store.create_run("r1", "old", {"manifests": ["other.csv"]})
    store.create_run("r2", "clips", {"manifests": ["clips.csv"]})
    assert resumable_run(store, [Path("clips.csv")]) == "r2"
    assert resumable_run(store, [Path("clips.csv"), Path("more.csv")]) is None
    assert resumable_run(store, [Path("other.csv")]) is None  # not the latest
    assert resumable_run(store, [Path("./clips.csv")]) == "r2"  # the same file, written so
    assert resumable_run(store, [Path("clips.csv").resolve()]) == "r2"


def test_state_lives_beside_the_videos_or_here_when_they_go_to_s3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert state_root(Settings(output="clips")) == Path("clips")
    assert state_root(Settings(output="s3://bucket/clips")) == tmp_path


def test_a_local_image_a_remote_provider_cannot_fetch_stops_the_run(tmp_path: Path) -> None:
    settings = Settings(output=str(tmp_path), provider_url=PROVIDER)
    with pytest.raises(ConfigError) as caught:
        refuse_unreachable_inputs(settings, [job(0), job(1, image="/m/images/mug.png")])
    message = str(caught.value)
    assert message.startswith("/m/clips.csv:3: input_image: /m/images/mug.png")
    assert "--out s3://" in message and "nothing was sent" in message and "\n" not in message
    refuse_unreachable_inputs(settings, [job(0), job(1)])  # URLs only: fine


@pytest.mark.parametrize(
    "update",
    [
        {"provider_url": "http://127.0.0.1:8100", "allow_private_urls": True},  # served locally
        {"output": "s3://bucket/clips"},  # uploaded to S3 and presigned
    ],
)
def test_a_local_image_is_fine_where_it_can_be_published(
    tmp_path: Path, update: dict[str, object]
) -> None:
    settings = Settings(output=str(tmp_path), provider_url=PROVIDER).model_copy(update=update)
    refuse_unreachable_inputs(settings, [job(0, image="/m/images/mug.png")])


def test_paid_generations_of_an_earlier_interrupted_run_are_waited_for() -> None:
    from cli.local_run import finish_earlier_runs
    from seedq.contract import JobState

    store = JobStore(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    for run_id, jobs in (("r-old", ["a", "b"]), ("r-new", ["c"])):
        store.create_run(run_id, run_id, {})
        for _ in store.register(run_id, [(j, f"fp-{j}", {"params": {}}) for j in jobs]):
            pass
        store.activate_run(run_id)
    path = [JobState.SUBMITTING, JobState.SUBMITTED, JobState.GENERATED]
    for before, after in zip([JobState.REGISTERED, *path], path, strict=False):
        assert store.move("a", "r-old", after, expect=[before]).ok
    naps: list[float] = []

    def sleep(seconds: float) -> None:  # the worker delivers "a" while the command waits
        naps.append(seconds)
        store.move("a", "r-old", JobState.DELIVERED, expect=[JobState.GENERATED])

    finish_earlier_runs(store, "r-new", timeout_s=None, sleep=sleep)
    assert naps == [0.5]
    assert store.job_state("a") is JobState.DELIVERED
    assert store.job_state("b") is JobState.REGISTERED  # never started: nothing to wait for


def test_a_resumed_run_registers_neither_held_nor_delivered_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """open_target's wiring: jobs the resumed run's retry holds back (an operator must
    decide: registering them again could pay twice) and jobs whose sidecars prove them
    delivered are both left out; the rest are registered."""
    import contextlib
    from collections.abc import Iterator
    from contextlib import ExitStack

    from pydantic import SecretStr

    import cli.embedded
    from cli import run as run_command
    from cli.embedded import Stack
    from producer.spool import Spool

    store = JobStore(fakeredis.FakeRedis())
    store.create_run("r-old", "clips", {"manifests": ["m.csv"]})
    settings = Settings(output=str(tmp_path), provider_url=PROVIDER, oxen_api_key=SecretStr("k"))

    @contextlib.contextmanager
    def fake_stack(_settings: Settings, _root: Path) -> Iterator[Stack]:
        yield Stack(object(), store, settings, PROVIDER)

    monkeypatch.setattr(cli.embedded, "local_stack", fake_stack)
    monkeypatch.setattr(run_command, "retry_failed", lambda *_a: {"clip-1"})
    jobs = [job(i) for i in range(4)]
    deliver(tmp_path, jobs[2])
    with Spool() as spool, ExitStack() as stack:
        for spec in jobs:
            spool.write(spec)
        target = run_command.open_target(
            stack, settings, [Path("m.csv")], spool, demo=False, force=False
        )
        assert target.resume_id == "r-old"
        assert [j.id for j in target.jobs] == ["clip-0", "clip-3"]
        assert target.skipped.n == 1


@pytest.mark.parametrize("demo", [True, False])
def test_the_demo_runs_beside_a_compose_env_file_and_a_real_run_refuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo: bool
) -> None:
    """A compose stack's .env (placeholders and all) beside the demo must not stop it:
    the demo uses neither the key nor Flower's login. A real run refuses them."""
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("OXEN_API_KEY=change-me\nFLOWER_BASIC_AUTH=admin:change-me\n")
    args = ["run", *(["--demo"] if demo else []), str(tmp_path / "missing.yaml")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    refused = "OXEN_API_KEY" in result.output and "FLOWER_BASIC_AUTH" in result.output
    assert refused is not demo, result.output
