"""Admission's read-then-verify: the admit script takes only keys the caller read and
passed, checks the read is current, and admit reads again (at most ``MAX_READS`` times)
when it is not; and the decisions shared with other places agree with them: the waiting
score with the store's register script, the budget pause with ``JobStore.pause_run``."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from seedq import keys
from seedq.admission import MAX_READS, Admission, budget_reason
from seedq.contract import RunStatus
from seedq.records import waiting_score
from seedq.store import JobStore


@pytest.fixture
def store(client: redis.Redis) -> JobStore:
    return JobStore(client)


def make_run(
    store: JobStore, run_id: str, jobs: list[tuple[str, int, float]], *, run_priority: int = 0
) -> None:
    store.create_run(run_id, run_id, {})
    triples = [
        (job_id, f"fp-{job_id}", {"model": "m", "priority": prio, "est_cost": est})
        for job_id, prio, est in jobs
    ]
    for _ in store.register(run_id, triples, run_priority=run_priority):
        pass
    store.set_run_status(run_id, RunStatus.ACTIVE)


def meddle_after_read(adm: Admission, meddle: Any) -> list[int]:
    """Calls ``meddle(n)`` after each of admit's reads (n from 0); returns the count."""
    reads: list[int] = []
    read = adm._read

    def reading(limit: int) -> Any:
        snapshot = read(limit)
        meddle(len(reads))
        reads.append(limit)
        return snapshot

    adm._read = reading  # type: ignore[method-assign]
    return reads


def test_a_run_registered_after_the_read_is_seen_on_a_second_read(store: JobStore) -> None:
    adm = Admission(store, max_in_flight=2, lease_s=60)
    make_run(store, "nightly", [("n0", 0, 0.0), ("n1", 0, 0.0)])

    def meddle(n: int) -> None:
        if n == 0:
            make_run(store, "urgent", [("u0", 0, 0.0), ("u1", 0, 0.0)], run_priority=10)

    reads = meddle_after_read(adm, meddle)
    assert [a.job_id for a in adm.admit()] == ["u0", "u1"]  # as if read after it came
    assert len(reads) == 2


def test_a_job_requeued_at_the_head_after_the_read_goes_first(store: JobStore) -> None:
    adm = Admission(store, max_in_flight=3, lease_s=60)
    make_run(store, "run", [("a", 0, 0.0), ("b", 0, 0.0), ("c", 0, 0.0), ("d", 0, 0.0)])
    assert [a.job_id for a in adm.admit(max_batch=1)] == ["a"]

    def meddle(n: int) -> None:
        if n == 0:
            assert adm.requeue("run", "a", 0)  # its run paused and resumed meanwhile

    reads = meddle_after_read(adm, meddle)
    assert [a.job_id for a in adm.admit()] == ["a", "b", "c"]
    assert len(reads) == 2


def test_jobs_taken_before_a_stale_head_are_kept(store: JobStore) -> None:
    adm = Admission(store, max_in_flight=3, lease_s=60)
    make_run(store, "run-a", [("a0", 0, 0.0), ("a1", 0, 0.0)], run_priority=1)
    make_run(store, "run-b", [("b0", 0, 0.0), ("b1", 0, 0.0)])

    def meddle(n: int) -> None:
        if n == 0:  # b1 jumps its queue after the first read
            store.redis.zadd(keys.run_waiting("run-b"), {"b1": waiting_score(999, 0)})

    reads = meddle_after_read(adm, meddle)
    assert [a.job_id for a in adm.admit()] == ["a0", "a1", "b1"]
    assert len(reads) == 2


def test_reads_are_bounded_when_every_read_is_stale(store: JobStore) -> None:
    adm = Admission(store, max_in_flight=5, lease_s=60)
    make_run(store, "run", [("j0", 0, 0.0)])

    def meddle(n: int) -> None:  # a new run each time: the runs read never hold
        make_run(store, f"new-{n}", [(f"x{n}", 0, 0.0)], run_priority=n + 1)

    reads = meddle_after_read(adm, meddle)
    assert adm.admit() == []
    assert len(reads) == MAX_READS
    # Left for the next call, which admits them all.
    assert len(Admission(store, max_in_flight=5, lease_s=60).admit()) == 1 + MAX_READS


def test_the_admit_script_writes_the_pause_that_pause_run_writes(store: JobStore) -> None:
    adm = Admission(store, max_in_flight=5, lease_s=60)
    make_run(store, "by-budget", [("j0", 0, 0.6), ("j1", 0, 0.6)])
    adm.budgets.set_cap("by-budget", 1.0)
    make_run(store, "by-hand", [("k0", 0, 0.0)])

    assert sorted(a.job_id for a in adm.admit()) == ["j0", "k0"]
    store.pause_run("by-hand", budget_reason(0.6, 1.0, 0.6))

    def fields(run_id: str) -> dict[str, str]:
        raw: dict[Any, Any] = store.redis.hgetall(keys.run(run_id))
        return {k.decode(): v.decode() for k, v in raw.items() if k in (b"status", b"reason")}

    assert fields("by-budget") == fields("by-hand")
    assert fields("by-budget") == {
        "status": RunStatus.PAUSED,
        "reason": "budget: 0.60 committed of 1.00; the next job would cost 0.60",
    }


def test_register_scores_jobs_as_waiting_score_does(store: JobStore) -> None:
    before = int(store.redis.get(keys.SEQUENCE) or 0)
    make_run(store, "run", [("low", -3, 0.0), ("high", 7, 0.0), ("zero", 0, 0.0)])
    raw: Any = store.redis.zrange(keys.run_waiting("run"), 0, -1, withscores=True)
    scores = dict(raw)
    assert scores == {
        b"low": waiting_score(-3, before + 1),
        b"high": waiting_score(7, before + 2),
        b"zero": waiting_score(0, before + 3),
    }


@pytest.mark.parametrize(
    ("first", "second"),
    [((5, 10**6), (4, 0)), ((0, 1), (0, 2)), ((1000, 10**8), (-1000, 0)), ((-1000, 0), (-1000, 1))],
)
def test_waiting_score_orders_by_priority_then_sequence(
    first: tuple[int, int], second: tuple[int, int]
) -> None:
    assert waiting_score(*first) < waiting_score(*second)
