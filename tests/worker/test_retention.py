"""Retention (worker.retention): an ended run is archived beside its clips, its
delivered jobs compacted, and once old enough it is pruned from Redis, a bounded batch
at a time, never a job still in use; a job whose record was pruned is skipped at its
next submit because its sidecar proves it delivered.

The pipeline is the one of tests/worker/test_steps.py (the simulator over HTTP, a
local output directory), on fakeredis and on the real Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis
from typer.testing import CliRunner

from cli.main import app
from cli.prune import parse_duration
from seedq import keys
from seedq.contract import JobState, RunStatus
from seedq.records import COMPACT_DROP_SPEC as DROP_SPEC
from seedq.report import report_rows
from seedq.store import COMPACT_DROP_FIELDS, JobStore
from tests.conftest import TEST_REDIS_URL
from tests.worker.test_steps import Pipeline, pipeline_on
from worker.auditor import audit_run
from worker.delivery import deliver_job
from worker.retention import (
    DAY_S,
    RunFacts,
    archive_key,
    ended,
    prune_run,
    prune_step,
    read_runs,
    retain,
    retention_pass,
    to_archive,
    to_prune,
)
from worker.submitting import submit_job

REPO = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.0
ROW = {"prompt": "a red mug turns slowly", "duration": "4", "resolution": "480p"}


def facts(
    status: str = RunStatus.ACTIVE,
    counts: dict[str, int] | None = None,
    total: int = 2,
    created_at: float = NOW - 40 * DAY_S,
    archived_at: float | None = None,
    run_id: str = "r1",
    archived_counts: dict[str, int] | None = None,
) -> RunFacts:
    counts = {"delivered": 2} if counts is None else counts
    archive = archived_counts if archived_counts is not None else dict(counts)
    return RunFacts(run_id, "n", status, counts, total, created_at, archived_at, archive)


@pytest.mark.parametrize(
    ("run", "is_ended"),
    [
        (facts(), True),
        (facts(counts={"delivered": 1, "failed": 1}), True),
        (facts(counts={"delivered": 1, "submitted": 1}), False),
        (facts(status=RunStatus.REGISTERING), False),
        (facts(status=RunStatus.SCHEDULED), False),
        (facts(status=RunStatus.PAUSED, counts={"delivered": 1, "registered": 1}), False),
        (facts(status=RunStatus.CANCELLED, counts={"cancelled": 1, "generated": 1}), False),
        (facts(status=RunStatus.CANCELLED, counts={"cancelled": 2}), True),
        (facts(total=0, counts={}), False),
    ],
)
def test_a_run_has_ended_when_every_job_is_terminal(run: RunFacts, is_ended: bool) -> None:
    assert ended(run) is is_ended


def test_archive_and_prune_choose_ended_runs_by_age() -> None:
    runs = [
        facts(run_id="old-archived", archived_at=NOW - 39 * DAY_S),
        facts(run_id="old-not-archived"),
        facts(run_id="young", created_at=NOW - 2 * DAY_S, archived_at=NOW - DAY_S),
        facts(run_id="busy", counts={"submitted": 2}, archived_at=None),
    ]
    assert to_archive(runs) == ["old-not-archived"]
    same = facts(
        counts={"delivered": 2, "failed": 0}, archived_at=NOW, archived_counts={"delivered": 2}
    )
    moved = facts(run_id="r2", archived_at=NOW, archived_counts={"delivered": 1, "failed": 1})
    assert to_archive([same, moved]) == ["r2"]  # retried since its archive: again
    assert to_prune(runs, NOW, 30 * DAY_S) == ["old-archived"]
    assert to_prune(runs, NOW, DAY_S) == ["old-archived", "young"]


# -- on the pipeline --------------------------------------------------------------------


@pytest.fixture(params=["fake", "real"])
def pipe(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pipeline]:
    client: redis.Redis = (
        fakeredis.FakeRedis(server=fakeredis.FakeServer())
        if request.param == "fake"
        else request.getfixturevalue("real_redis")
    )
    with pipeline_on(client, tmp_path) as p:
        yield p


def deliver(p: Pipeline, run_id: str, job_id: str, *, bill: bool = True) -> None:
    """Submit, track and deliver the job; record its bill (the biller's part)."""
    p.until_generated(run_id, job_id)
    deliver_job(p.rt, run_id, job_id)
    assert p.state(job_id) is JobState.DELIVERED
    if bill:
        assert p.rt.store.billing.record(job_id, run_id, 0.384, p.rt.now())


def rows_of(*numbers: int) -> list[dict[str, str]]:
    """Manifest rows of distinct jobs (the simulator counts equal ones as duplicates)."""
    return [
        {"id": f"clip-{n}", "input_image": "images/red.png", **ROW, "prompt": f"mug {n}"}
        for n in numbers
    ]


def run_of_two(p: Pipeline) -> str:
    run_id = p.submit_manifest(rows_of(1, 2))
    for job_id in ("clip-1", "clip-2"):
        deliver(p, run_id, job_id)
    return run_id


def seedq_keys(client: redis.Redis) -> set[str]:
    return {k.decode() if isinstance(k, bytes) else k for k in client.keys("seedq:*")}


def test_an_ended_run_is_archived_beside_its_clips_once(pipe: Pipeline) -> None:
    p = pipe
    run_id = run_of_two(p)
    before = report_rows(p.rt.store, run_id)

    done = retention_pass(p.rt.store, p.storage, now_s=p.rt.now(), retention_days=30)

    assert done.archived == run_id and done.pruned_run is None  # created now: kept
    archive = p.folder / "out" / archive_key(run_id)
    lines = [json.loads(line) for line in archive.read_text().splitlines()]
    assert [row["id"] for row in lines] == ["clip-1", "clip-2"]
    assert lines[0]["output_key"] and lines[0]["prompt"] == "mug 1"
    assert p.rt.store.run(run_id) is not None
    info = read_runs(p.rt.store)[0]
    assert info.archived_at is not None and info.archived_counts == {"delivered": 2}
    # Archived once: a second pass writes nothing more.
    writes = p.storage.calls["put_file"]
    assert (
        retention_pass(p.rt.store, p.storage, now_s=p.rt.now(), retention_days=30).archived is None
    )
    assert p.storage.calls["put_file"] == writes
    # Compacted, yet the report reads the same.
    job = p.job("clip-1")
    assert "spec" in job and not set(COMPACT_DROP_FIELDS) & set(job), job
    assert "fingerprint" not in json.loads(job["spec"]) and job["fingerprint"]
    assert report_rows(p.rt.store, run_id) == before


def test_a_run_still_moving_is_neither_archived_nor_pruned(pipe: Pipeline) -> None:
    p = pipe
    run_id = p.one_job()
    p.until_generated(run_id, "clip-1")
    done = retention_pass(p.rt.store, p.storage, now_s=p.rt.now() + 90 * DAY_S, retention_days=30)
    assert done.archived is None and done.pruned_run is None
    assert not (p.folder / "out" / archive_key(run_id)).exists()
    assert p.state("clip-1") is JobState.GENERATED


def test_an_old_archived_run_is_pruned_with_every_key_of_it(pipe: Pipeline) -> None:
    p = pipe
    run_id = run_of_two(p)
    gens = [p.job(j)["generation_id"] for j in ("clip-1", "clip-2")]
    retention_pass(p.rt.store, p.storage, now_s=p.rt.now(), retention_days=30)
    p.rt.store.redis.sadd(keys.NOTIFY_WATCH, run_id)  # as the notifications' tick would
    later = p.rt.now() + 31 * DAY_S

    first = retention_pass(p.rt.store, p.storage, now_s=later, retention_days=30)
    assert (first.pruned_run, first.pruned_jobs) == (run_id, 2)
    assert p.job("clip-1") == {} and p.job("clip-2") == {}
    assert all(p.rt.store.job_for_generation(g) is None for g in gens)
    retention_pass(p.rt.store, p.storage, now_s=later, retention_days=30)  # drops the run

    left = seedq_keys(p.rt.store.redis)
    assert not [k for k in left if run_id in k or ":job:" in k or ":gen:" in k], left
    assert p.rt.store.runs() == []
    assert not p.rt.store.redis.sismember(keys.NOTIFY_WATCH, run_id)
    assert (p.folder / "out" / archive_key(run_id)).exists()  # the archive stays


def test_retention_zero_days_archives_but_never_prunes(pipe: Pipeline) -> None:
    p = pipe
    run_id = run_of_two(p)
    for _ in range(3):
        retention_pass(p.rt.store, p.storage, now_s=p.rt.now() + 900 * DAY_S, retention_days=0)
    assert p.job("clip-1") and p.rt.store.run(run_id) is not None


def test_the_tick_runs_a_pass_at_most_every_few_seconds(pipe: Pipeline) -> None:
    p = pipe
    run_id = run_of_two(p)
    retain(p.rt.store, p.storage, now_s=p.rt.now(), retention_days=30)
    assert read_runs(p.rt.store)[0].archived_at is not None
    p.rt.store.redis.hdel(keys.run(run_id), "archived_at")
    retain(p.rt.store, p.storage, now_s=p.rt.now() + 1, retention_days=30)  # not due yet
    assert read_runs(p.rt.store)[0].archived_at is None


def test_a_job_in_use_is_never_pruned(pipe: Pipeline) -> None:
    p = pipe
    run_id = p.submit_manifest(rows_of(1, 2, 3))
    deliver(p, run_id, "clip-1")
    deliver(p, run_id, "clip-2", bill=False)  # its bill is still asked for
    deliver(p, run_id, "clip-3")

    steps = list(prune_run(p.rt.store, run_id, batch=2))

    assert sum(s.jobs for s in steps) == 2 and not steps[-1].run_gone
    assert p.job("clip-1") == {} and p.job("clip-3") == {}
    assert p.state("clip-2") is JobState.DELIVERED
    assert p.rt.store.run_job_ids(run_id) == ["clip-2"]
    assert p.rt.store.run(run_id) is not None  # the run waits for its last job

    p.rt.store.billing.give_up("clip-2", run_id)
    assert [s.run_gone for s in prune_run(p.rt.store, run_id)] == [False, True]
    assert p.job("clip-2") == {} and p.rt.store.run(run_id) is None


def test_a_job_registered_again_into_a_newer_run_is_left_to_it(pipe: Pipeline) -> None:
    p = pipe
    old = p.one_job()
    p.until_generated(old, "clip-1")
    p.rt.store.move("clip-1", old, JobState.FAILED, expect=[JobState.GENERATED])
    new = p.one_job()  # failed before: registered again, now the new run's
    assert p.job("clip-1")["run_id"] == new

    verdicts = p.rt.store.prune_jobs(old, ["clip-1"])
    assert verdicts == {"clip-1": "foreign"}
    assert p.job("clip-1")["run_id"] == new
    step = prune_step(p.rt.store, old)
    assert step.jobs == 0 and p.rt.store.run_job_ids(old) == []


def test_a_pruned_job_submitted_again_is_not_paid_twice(pipe: Pipeline) -> None:
    p = pipe
    run_id = run_of_two(p)
    retention_pass(p.rt.store, p.storage, now_s=p.rt.now(), retention_days=30)
    for _ in prune_run(p.rt.store, run_id):
        pass
    assert p.job("clip-1") == {}
    p.assert_at_most_once(2)

    again = p.submit_manifest(rows_of(1, 2))
    assert p.state("clip-1") is JobState.REGISTERED  # its record was gone: new
    for job_id in ("clip-1", "clip-2"):
        assert submit_job(p.rt, again, job_id).task is None

    p.assert_at_most_once(2)  # nothing enqueued at the provider again
    job = p.job("clip-1")
    assert job["state"] == JobState.DELIVERED and job["delivered_by"] == run_id
    assert job["output_uri"].endswith("clip-1.mp4") and float(job["cost"]) == 0
    assert p.lease_until("clip-1") is None  # its slot is free
    assert p.rt.store.billing.unbilled() == 0  # paid for by the first run
    info = p.rt.store.run(again)
    assert info is not None and info.counts == {"delivered": 2, "registered": 0}


def test_a_forced_run_generates_again_despite_the_sidecar(pipe: Pipeline) -> None:
    p = pipe
    run_id = run_of_two(p)
    for _ in prune_run(p.rt.store, run_id):  # by hand: not archived, still prunable here
        pass
    again = p.submit_manifest(rows_of(1))
    p.rt.store.redis.hset(keys.run(again), "meta", json.dumps({"force": True}))
    deliver(p, again, "clip-1")
    assert p.stats()["enqueued"] == 3  # generated again, on purpose


def test_a_clip_from_another_provider_proves_nothing(pipe: Pipeline) -> None:
    p = pipe
    run_id = run_of_two(p)
    for _ in prune_run(p.rt.store, run_id):
        pass
    sidecar = p.folder / "out" / "clip-1.json"
    doc = json.loads(sidecar.read_text())
    doc["provider"] = "https://elsewhere.example"
    sidecar.write_text(json.dumps(doc))
    again = p.submit_manifest(rows_of(1))
    deliver(p, again, "clip-1")
    assert p.stats()["enqueued"] == 3  # generated again: no proof


def test_store_prune_and_compact_refuse_what_is_not_theirs(pipe: Pipeline) -> None:
    p = pipe
    store: JobStore = p.rt.store
    run_id = p.one_job()
    assert store.compact_jobs(run_id, ["clip-1"]) == 0  # registered: not delivered
    assert store.prune_jobs(run_id, ["clip-1", "nobody"]) == {
        "clip-1": "busy",
        "nobody": "gone",
    }
    assert store.compact_jobs("another-run", ["clip-1"]) == 0


# -- seedq prune ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 7 * DAY_S), ("12h", 43200.0), ("30m", 1800.0), ("0s", 0.0), ("1.5d", 1.5 * DAY_S)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["7", "d", "-1d", "7y", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_cli_prunes_at_once_and_says_what(
    real_redis: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pipeline_on(real_redis, tmp_path) as p:
        run_id = run_of_two(p)
        busy = p.submit_manifest(rows_of(3))  # still registered: never pruned
        for name, value in {
            "SEEDQ_REDIS_URL": TEST_REDIS_URL,
            "SEEDQ_OUTPUT": str(tmp_path / "out"),
        }.items():
            monkeypatch.setenv(name, value)
        runner = CliRunner()

        young = runner.invoke(app, ["prune"])  # 30 days by default
        assert young.exit_code == 0 and "nothing to prune" in young.stdout, young.output
        dry = runner.invoke(app, ["prune", "--older-than", "0s", "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert f"would prune run {run_id}" in dry.stdout and busy not in dry.stdout
        assert p.job("clip-1") and not (p.folder / "out" / archive_key(run_id)).exists()

        done = runner.invoke(app, ["prune", "--older-than", "0s"])
        assert done.exit_code == 0, done.output
        assert f"pruned run {run_id}" in done.stdout and "2 job record(s)" in done.stdout
        assert (p.folder / "out" / archive_key(run_id)).exists()
        assert p.job("clip-1") == {} and p.rt.store.run(run_id) is None
        assert p.state("clip-3") is JobState.REGISTERED and p.rt.store.run(busy) is not None

        bad = runner.invoke(app, ["prune", "--older-than", "soon"])
        assert bad.exit_code == 2 and "not a duration" in bad.output


# -- compact hashes and the benchmark's arithmetic ----------------------------------------


def test_every_redis_seedq_starts_keeps_job_hashes_compact(tmp_path: Path) -> None:
    """A job hash has values longer than Redis's default 64-byte listpack limit (its
    spec); the stack's Redis and the private one of a paid local run raise it."""
    import yaml

    from cli.localredis import paths_for, server_config

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    assert "--hash-max-listpack-value 1024" in " ".join(compose["services"]["redis"]["command"])
    assert "hash-max-ziplist-value 1024\n" in server_config(paths_for(tmp_path))


def test_the_benchmark_projects_growth_against_a_plateau() -> None:
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("redis_memory", REPO / "bench/redis_memory.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    project = bench.project

    args = argparse.Namespace(jobs=1000, nights=30, retention_days=30.0)
    delivered = {"bytes_per_job": 3000.0, "run_overhead_bytes": 1000.0}
    archived = {"bytes_per_job": 1000.0, "run_overhead_bytes": 1000.0}
    out = project(delivered, archived, args)
    assert out["per_night_bytes_as_delivered"] == 3_001_000
    gb = {n: v for n, v in out["gb_after_nights"].items()}
    night_gb, kept_gb = 3_001_000 / 1024**3, 1_001_000 / 1024**3
    assert gb["30"]["without_retention"] == round(30 * night_gb, 2)
    assert gb["60"]["with_retention"] == round(30 * kept_gb + night_gb, 2)
    assert gb["360"]["with_retention"] == gb["60"]["with_retention"]


def test_the_workers_tick_archives_an_ended_run(pipe: Pipeline) -> None:
    from worker.ticker import tick

    p = pipe
    run_id = run_of_two(p)
    tick(p.rt, p.send)
    assert (p.folder / "out" / archive_key(run_id)).exists()
    assert "result_url" not in p.job("clip-1")


def test_a_skipped_job_gives_its_budget_reservation_back(pipe: Pipeline) -> None:
    from producer.manifest import ReadOptions
    from producer.submit import validate_and_submit
    from seedq.catalog import ModelCatalog
    from seedq.records import decoded
    from seedq.settings import DEFAULT_MODEL

    p = pipe
    run_id = run_of_two(p)
    for _ in prune_run(p.rt.store, run_id):
        pass
    manifest = p.folder / "again.csv"
    row = rows_of(1)[0]
    manifest.write_text(",".join(row) + "\n" + ",".join(row.values()) + "\n", encoding="utf-8")
    opts = ReadOptions(default_model=DEFAULT_MODEL, allow_private_urls=True)
    _checked, done = validate_and_submit(
        [manifest], opts, ModelCatalog(), p.rt.store, p.send, admission=p.rt.admission, budget=10.0
    )
    budget = keys.run_budget(done.run_id)
    assert float(p.rt.store.redis.hget(budget, "reserved") or 0) > 0  # admitted: reserved

    assert submit_job(p.rt, done.run_id, "clip-1").task is None

    assert p.state("clip-1") is JobState.DELIVERED
    p.assert_at_most_once(2)
    money = {decoded(k): float(v) for k, v in p.rt.store.redis.hgetall(budget).items()}
    assert money.get("reserved", 0) == 0 and money.get("spent", 0) == 0, money


# -- a compacted job: its size, and everyone who reads it ---------------------------------

JSON_FIELDS = ("spec", "sent_params", "warnings")


def meaning(record: dict[str, str]) -> dict[str, object]:
    """A job record with its JSON fields parsed: packing writes them back compactly."""
    return {k: json.loads(v) if k in JSON_FIELDS else v for k, v in record.items()}


def without_bookkeeping(record: dict[str, str]) -> dict[str, object]:
    """What compaction is to keep of a delivered job's record."""
    kept = meaning({k: v for k, v in record.items() if k not in COMPACT_DROP_FIELDS})
    kept["spec"] = {k: v for k, v in json.loads(record["spec"]).items() if k not in DROP_SPEC}
    return kept


def test_a_compacted_job_takes_under_a_kilobyte_on_a_default_redis(
    real_redis: redis.Redis, tmp_path: Path
) -> None:
    """With Redis's default hash-max-listpack-value (64 bytes) as with the stack's 1024:
    every long value is packed, so the hash keeps the compact listpack encoding (for
    which MEMORY USAGE is exact, not sampled)."""
    config: dict[str, str] = real_redis.config_get("hash-max-listpack-value")  # type: ignore[assignment]
    if int(config["hash-max-listpack-value"]) < 64:
        pytest.skip("this Redis keeps hashes compact below the default limit only")
    with pipeline_on(real_redis, tmp_path) as p:
        run_of_two(p)
        key = keys.job("clip-1")
        delivered = real_redis.memory_usage(key, samples=0)

        assert retention_pass(p.rt.store, p.storage, now_s=p.rt.now(), retention_days=30).archived

        assert real_redis.object("encoding", key) in (b"listpack", b"ziplist")
        compact = real_redis.memory_usage(key, samples=0)
        assert compact is not None and delivered is not None
        assert compact <= 1024 < delivered, (delivered, compact)


def test_every_reader_of_a_compacted_run_reads_it_whole(pipe: Pipeline) -> None:
    p = pipe
    run_id = run_of_two(p)
    before = p.job("clip-1")
    store: JobStore = p.rt.store
    assert retention_pass(store, p.storage, now_s=p.rt.now(), retention_days=30).archived

    job = p.job("clip-1")
    assert meaning(job) == without_bookkeeping(before)
    # The biller's and the tick's reads of a few fields, packed or not.
    assert store.job_fields(["clip-1", "nobody"], ("state", "spec", "generation_id")) == [
        ["delivered", job["spec"], before["generation_id"]],
        ["", "", ""],
    ]
    # The audit: outputs, sidecars, bills, and each video decoded against what was sent.
    assert audit_run(p.rt, run_id, verify=True).found == []
    # The same manifest again: delivered with the same parameters, nothing is sent.
    again = p.submit_manifest(rows_of(1, 2))
    assert p.job("clip-1") == job and p.rt.store.run_job_ids(again) == []
    p.assert_at_most_once(2)


def test_a_compacted_job_whose_clip_is_gone_is_delivered_again(pipe: Pipeline) -> None:
    """The audit's repair moves the compacted job back to generated and delivers it
    (worker.auditor): the steps read its packed spec; what they write wins over it."""
    p = pipe
    run_id = run_of_two(p)
    retention_pass(p.rt.store, p.storage, now_s=p.rt.now(), retention_days=30)
    p.storage.path("clip-1.mp4").unlink()

    audited = audit_run(p.rt, run_id, fix=True)

    assert [r.ok for r in audited.repaired] == [True] and audited.remaining == []
    job = p.job("clip-1")
    assert job["state"] == JobState.DELIVERED and p.storage.path("clip-1.mp4").exists()
    assert job["output_uri"].endswith("clip-1.mp4") and json.loads(job["sent_params"])
    assert p.rt.store.compact_jobs(run_id, ["clip-1"]) == 1  # it grew bookkeeping again
    assert meaning(p.job("clip-1")) == without_bookkeeping(job)
    p.assert_at_most_once(2)


def test_compaction_leaves_a_job_changed_since_it_was_read(
    pipe: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compare-and-set on the whole hash: a field written between the read and the
    rewrite (a bill, a move, a registration) is never lost to it."""
    p = pipe
    run_id = run_of_two(p)
    store: JobStore = p.rt.store
    stale = store._hashes(["clip-1"])
    store.update_job("clip-1", note="written meanwhile")

    with monkeypatch.context() as patch:
        patch.setattr(store, "_hashes", lambda _ids: stale)
        assert store.compact_jobs(run_id, ["clip-1"]) == 0

    assert p.job("clip-1")["note"] == "written meanwhile" and "result_url" in p.job("clip-1")
    assert store.compact_jobs(run_id, ["clip-1"]) == 1
    assert store.compact_jobs(run_id, ["clip-1"]) == 0  # compacted already: left as it is
    assert p.job("clip-1")["note"] == "written meanwhile" and "result_url" not in p.job("clip-1")


def test_retrying_a_compacted_run_leaves_its_delivered_jobs_as_they_are(pipe: Pipeline) -> None:
    from cli.retrying import retry

    p = pipe
    run_id = p.submit_manifest(rows_of(1, 2))
    deliver(p, run_id, "clip-1")
    moved = p.rt.store.move(
        "clip-2", run_id, JobState.FAILED, expect=[JobState.REGISTERED], failed_step="submit"
    )
    assert moved.ok
    assert retention_pass(p.rt.store, p.storage, now_s=p.rt.now(), retention_days=30).archived
    compact = p.rt.store.redis.hgetall(keys.job("clip-1"))

    done = retry(p.rt.store, p.rt.admission, p.rt.provider, p.send, run_id)

    assert done.counts["fresh attempt"] == 1 and p.state("clip-2") is JobState.REGISTERED
    assert p.rt.store.redis.hgetall(keys.job("clip-1")) == compact
