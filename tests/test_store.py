"""The job store's named methods, against fakeredis and a real Redis alike: what the
rest of the code asks of Redis goes through these (tests/test_gateways.py keeps it so),
so each is pinned here to the keys and values it leaves."""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis

from seedq import keys, scripts
from seedq.contract import JobState
from seedq.logs import Redactor
from seedq.records import failure_fields
from seedq.store import JobStore

ROOT = Path(__file__).resolve().parents[1]
RUN, OTHER = "r1", "r2"


@pytest.fixture(params=["fakeredis", "redis"])
def client(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    if request.param == "redis":
        yield request.getfixturevalue("real_redis")
    else:
        yield fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
def store(client: redis.Redis) -> JobStore:
    s = JobStore(client)
    s.create_run(RUN, "one", {})
    s.create_run(OTHER, "two", {})
    return s


def register(store: JobStore, run_id: str, job_id: str, priority: int = 0) -> str:
    (result,) = store.register(run_id, [(job_id, "fp", {"priority": priority})])
    return str(next(d for d, n in result.counts.items() if n))


def test_a_move_stores_values_as_redis_py_sends_them(store: JobStore, client: redis.Redis) -> None:
    """The transition's one JSON argument carries text, so nothing is re-formatted by
    Lua's number conversion or lost to an escape."""
    register(store, RUN, "j")
    moved = store.move(
        "j",
        RUN,
        JobState.SUBMITTING,
        expect=[JobState.REGISTERED],
        error='naïve … "quoted"\n',
        cost=0.1,
        at=1700000000.123456,
        calls=3,
    )
    assert moved.ok and moved.before == JobState.REGISTERED
    job = client.hgetall(keys.job("j"))
    assert job[b"error"] == 'naïve … "quoted"\n'.encode()
    assert job[b"cost"] == b"0.1"
    assert job[b"at"] == b"1700000000.123456"
    assert job[b"calls"] == b"3"
    assert client.hgetall(keys.run_counts(RUN)) == {b"registered": b"0", b"submitting": b"1"}


def test_a_move_checks_run_states_and_conditions(store: JobStore) -> None:
    register(store, RUN, "j")
    assert store.move("j", OTHER, JobState.SUBMITTING, expect=[JobState.REGISTERED]).verdict == (
        "stale"
    )
    assert store.move("j", RUN, JobState.SUBMITTED, expect=[JobState.SUBMITTING]).verdict == (
        "refused"
    )
    assert store.move("nope", RUN, JobState.FAILED, expect=[JobState.REGISTERED]).verdict == (
        "missing"
    )
    when = {"generation_id": "g1"}
    changed = store.move_when("j", RUN, JobState.FAILED, expect=[JobState.REGISTERED], when=when)
    assert changed.verdict == "changed"
    store.update_job("j", generation_id="g1")
    assert store.move_when("j", RUN, JobState.FAILED, expect=[JobState.REGISTERED], when=when).ok


def test_failures_count_per_step_and_clear_on_the_move_forward(store: JobStore) -> None:
    register(store, RUN, "j")
    assert store.count_failure("j", "submit", 100.0) == (1, 100.0)
    assert store.count_failure("j", "submit", 130.0) == (2, 100.0)  # first failure kept
    assert store.count_failure("j", "deliver", 140.0) == (1, 140.0)
    store.clear_failures("j", "deliver")
    assert set(failure_fields("submit")) <= store.job("j").keys()
    assert not set(failure_fields("deliver")) & store.job("j").keys()
    store.move("j", RUN, JobState.SUBMITTING, expect=[JobState.REGISTERED])
    assert set(failure_fields("submit")) <= store.job("j").keys()  # not a step's success
    store.move("j", RUN, JobState.SUBMITTED, expect=[JobState.SUBMITTING])
    assert not set(failure_fields()) & store.job("j").keys()


def test_a_pending_job_waits_in_its_owners_queue(store: JobStore, client: redis.Redis) -> None:
    assert register(store, RUN, "j", priority=2) == "new"
    client.delete(keys.run_waiting(RUN))  # as if admission had taken it, then requeued
    client.zrem(keys.ADMISSION_RUNS, RUN)
    assert register(store, OTHER, "j") == "pending"
    assert client.zrange(keys.run_waiting(RUN), 0, -1) == [b"j"]
    assert client.zcard(keys.run_waiting(OTHER)) == 0
    assert client.zrange(keys.ADMISSION_RUNS, 0, -1) == [RUN.encode()]


def test_requeue_and_the_waiting_queue(store: JobStore, client: redis.Redis) -> None:
    register(store, RUN, "a")
    register(store, RUN, "b")
    store.drop_waiting(RUN)
    store.withdraw_run(RUN)
    client.zadd(keys.IN_FLIGHT, {"b": 1.0})
    assert store.unqueued(RUN, ["a", "b", "a"]) == ["a", "a"]
    store.requeue(RUN, "a", 1, 5)
    assert store.unqueued(RUN, ["a"]) == []
    assert client.zscore(keys.ADMISSION_RUNS, RUN) == 5.0
    assert client.hget(keys.run(RUN), "priority") == b"5"
    store.unqueue(RUN, "a")
    assert store.unqueued(RUN, ["a"]) == ["a"]
    store.offer_run(OTHER, 3)
    store.offer_run(OTHER, 9)  # kept as entered
    assert client.zscore(keys.ADMISSION_RUNS, OTHER) == 3.0


def test_batched_reads(store: JobStore) -> None:
    register(store, RUN, "a")
    store.update_job("a", generation_id="g1")
    assert store.jobs(["a", "zz"])[1] == {}
    assert store.jobs(["a"])[0]["state"] == "registered"
    assert store.job_fields(["a", "zz"], ["state", "generation_id"]) == [
        ["registered", "g1"],
        ["", ""],
    ]
    store.pause_run(RUN, "why not")
    assert store.run_statuses([RUN, OTHER, "none"]) == ["paused", "registering", ""]
    assert store.run_reason(RUN) == "why not"
    assert store.run_reason(OTHER) == ""
    assert store.claim_generation("g1", "a")
    assert store.generation_owners(["g1", "g2"]) == {"g1": "a"}
    store.clear_job_fields("a", "generation_id")
    assert "generation_id" not in store.job("a")


def test_a_batch_registers_in_one_script_call_with_each_jobs_decision(
    store: JobStore, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One call per batch, not per job (the producer's 100,000 rows), and each job of
    the batch gets its own decision, in order."""
    register(store, RUN, "pending")
    register(store, RUN, "done")
    register(store, RUN, "busy")
    client.hset(keys.job("done"), "state", "delivered")
    client.hset(keys.job("busy"), "state", "submitting")
    calls: list[int] = []
    script = store._register

    def counted(*, keys: list[str], args: list[object], **kw: object) -> object:
        calls.append(len(keys))
        return script(keys=keys, args=args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "_register", counted)
    jobs = [(j, "fp", {"priority": 0}) for j in ("new", "pending", "done", "busy")]
    jobs.append(("changed", "other", {}))
    client.hset(keys.job("changed"), mapping={"state": "delivered", "fingerprint": "fp"})
    (result,) = store.register(RUN, jobs)
    assert len(calls) == 1
    assert result.to_enqueue == ["new", "pending"] and result.changed == ["changed"]
    assert {d.value: n for d, n in result.counts.items() if n} == {
        "new": 1,
        "pending": 1,
        "done": 1,
        "active": 1,
        "changed": 1,
    }
    assert client.zrange(keys.run_waiting(RUN), 0, -1)[-1] == b"new"  # queued after them
    many: list[tuple[str, str, dict[str, object]]] = [(f"j{i}", "fp", {}) for i in range(1200)]
    assert [len(r.to_enqueue) for r in store.register(RUN, many)] == [500, 500, 200]
    assert len(calls) == 4


def test_the_tick_lock_and_the_sweep_clock(store: JobStore) -> None:
    assert store.take_tick_lock("t1", 5000)
    assert not store.take_tick_lock("t2", 5000)
    store.release_tick_lock("t2")  # not its lock: kept
    assert not store.take_tick_lock("t2", 5000)
    store.release_tick_lock("t1")
    assert store.take_tick_lock("t2", 5000)
    assert store.next_sweep_at() == 0.0  # never swept: due
    store.set_next_sweep(110.5)
    assert store.next_sweep_at() == 110.5


def test_every_lua_file_ships_in_the_package() -> None:
    """pyproject's package-data covers each script (the image and wheels install with it,
    not from the source tree), and the installed package finds it."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["seedq"]
    files = sorted((ROOT / "seedq" / scripts.FOLDER).glob("*.lua"))
    assert files
    for path in files:
        relative = path.relative_to(ROOT / "seedq").as_posix()
        assert any(fnmatch.fnmatch(relative, g) for g in globs), relative
        assert scripts.load(path.stem) == path.read_text(encoding="utf-8")


SIGNED = (
    "https://b.s3.amazonaws.com/in.png?X-Amz-Credential=AKIAEXAMPLE%2F20260101"
    "&X-Amz-Signature=0123456789abcdef0123&X-Amz-Security-Token=FwoGZXIvSESSION"
)


def test_error_texts_are_redacted_as_they_are_stored(store: JobStore, client: redis.Redis) -> None:
    """A job's ``error`` and ``last_error`` and a run's ``reason`` are often an exception
    quoting a URL or a header: Redis never holds its credentials, whoever writes them."""
    register(store, RUN, "j")
    store.update_job("j", last_error=f"download {SIGNED}: 403", result_url="kept")
    store.move(
        "j", RUN, JobState.FAILED, expect=[JobState.REGISTERED], error=f"Bearer abc123xyz {SIGNED}"
    )
    store.pause_run(RUN, f"fatal: {SIGNED}")
    store.set_run_status(OTHER, "paused", reason=f"fatal: {SIGNED}")
    stored = repr([client.hgetall(k) for k in (keys.job("j"), keys.run(RUN), keys.run(OTHER))])
    for secret in ("0123456789abcdef0123", "FwoGZXIvSESSION", "AKIAEXAMPLE", "abc123xyz"):
        assert secret not in stored
    job = store.job("j")
    assert job["error"].startswith("Bearer [redacted] https://b.s3.amazonaws.com/in.png?")
    assert "X-Amz-Signature=[redacted]" in job["last_error"]
    assert job["result_url"] == "kept"  # only the error texts are touched
    assert store.run_reason(RUN).startswith("fatal: https://b.s3.amazonaws.com/in.png?")


def test_a_store_given_secrets_keeps_them_out_of_error_texts(client: redis.Redis) -> None:
    store = JobStore(client, Redactor(["canary-api-key-0123"]))
    store.create_run(RUN, "one", {})
    register(store, RUN, "j")
    store.update_job("j", last_error="401 for key canary-api-key-0123")
    store.pause_run(RUN, "refused canary-api-key-0123")
    assert store.job("j")["last_error"] == "401 for key [redacted]"
    assert store.run_reason(RUN) == "refused [redacted]"
