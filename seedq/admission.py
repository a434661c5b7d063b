"""Admission: which waiting jobs may start now, under one global in-flight cap.

Every registered job waits in its run's queue (``keys.run_waiting``: priority, then
first in, first out). A job is *admitted* when it takes a slot of the global in-flight
set (``keys.IN_FLIGHT``) and only then gets a broker message, so a run of 100,000 jobs
costs 100,000 small Redis entries and at most ``max_in_flight`` messages, not 100,000
messages retried in a loop. The slot is held from before the enqueue until the
generation ends at the provider (``generated``, ``failed``, ``cancelled``), released in
the same Lua script that moves the job (``seedq.store._TRANSITION``), so the number of
generations queued or processing at the provider never exceeds the cap.

Slots are leases: each carries an expiry (server time) renewed while the job is seen
alive. A slot is first leased for ``SEND_LEASE_S`` only, and for ``lease_s`` once its
message is sent (``seedq.dispatch.admit_and_send``): a process killed between the two (a
tick, or the task that freed the slot) leaves the job re-driven within seconds, not
after a whole lease with no message anywhere. An expired lease means nobody has heard of
the job for ``lease_s``: its worker died, or a message was lost. The job is then
re-driven (its step message sent again, which is safe, every step being a
compare-and-set); its slot is not given away, since its generation may still be running
at the provider. A generated job holds no slot, but its delivery is leased the same way
(``keys.DELIVERING``, last heard of), so a worker killed mid-delivery does not leave it
generated.

Between runs: the highest run priority first; among runs of equal priority, the run
with the fewest jobs in flight gets the next slot (equal shares), so an urgent run
started beside a nightly one gets capacity as soon as slots free up: all of it with a
higher ``--priority``, half of it at the same priority.

The leases live in ``seedq.leases``, the run budgets in ``seedq.budget``; the scripts in
``seedq/lua`` (``admit.lua``, ``requeue.lua``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from seedq import keys
from seedq.budget import Budgets
from seedq.contract import ADMITTING, RunStatus
from seedq.leases import Leases
from seedq.records import waiting_score
from seedq.scripts import load
from seedq.settings import Settings
from seedq.store import JobStore, decoded

# What admit reads before its script runs may be changed by then (a run registered, a
# job requeued at the head of its queue): the script then stops, and admit reads again,
# at most this many times per call (what is left is admitted on the next call).
MAX_READS = 3
# An admitted job's lease until its message is sent: far longer than a send takes, far
# shorter than a lease, so a process that died in between costs seconds.
SEND_LEASE_S = 30.0
# What a run paused by admission says; Lua's string.format and Python's % agree on it.
BUDGET_PAUSE = "budget: %.2f committed of %.2f; the next job would cost %.2f"


def budget_reason(committed: float, cap: float, next_cost: float) -> str:
    """Why admission paused a run on its budget (the admit script writes the same)."""
    return BUDGET_PAUSE % (committed, cap, next_cost)


@dataclass(frozen=True, slots=True)
class Admitted:
    run_id: str
    job_id: str


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What admit read: the runs in admission order and the heads of their queues."""

    runs: list[tuple[str, float]]
    heads: dict[str, list[str]]


class Admission:
    """The in-flight cap and the waiting queues; every decision is one Lua call."""

    def __init__(self, store: JobStore, *, max_in_flight: int, lease_s: float) -> None:
        self.redis = store.redis
        self.max_in_flight = max_in_flight
        self.lease_s = lease_s
        self.leases = Leases(store.redis, lease_s=lease_s)
        self.budgets = Budgets(store.redis)
        self._admit = store.redis.register_script(load("admit"))
        self._requeue = store.redis.register_script(load("requeue"))

    def admit(self, max_batch: int = 500) -> list[Admitted]:
        """Take free slots for the best waiting jobs, leased for ``SEND_LEASE_S``; the
        caller sends their messages, then calls :meth:`sent`."""
        admitted: list[Admitted] = []
        for _ in range(MAX_READS):
            limit = min(self.max_in_flight - int(self.redis.zcard(keys.IN_FLIGHT)), max_batch)
            if limit <= 0:
                break
            verdict, more = self._admit_read(self._read(limit), max_batch - len(admitted))
            admitted += more
            if verdict != "stale" or len(admitted) >= max_batch:
                break
        return admitted

    def _read(self, limit: int) -> _Snapshot:
        raw: Any = self.redis.zrevrange(keys.ADMISSION_RUNS, 0, -1, withscores=True)
        runs = [(decoded(run_id), float(score)) for run_id, score in raw]
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id, _ in runs:
                pipe.hget(keys.run(run_id), "status")
                pipe.zrange(keys.run_waiting(run_id), 0, limit - 1)
            rows = pipe.execute()
        heads = {
            run_id: [decoded(j) for j in rows[2 * n + 1]]
            for n, (run_id, _) in enumerate(runs)
            if decoded(rows[2 * n]) in ADMITTING
        }
        return _Snapshot(runs, heads)

    def _admit_read(self, read: _Snapshot, max_batch: int) -> tuple[str, list[Admitted]]:
        run_keys: list[str] = []
        job_keys: list[str] = []
        run_args: list[str | float | int] = []
        for run_id, priority in read.runs:
            heads = read.heads.get(run_id, [])
            run_keys += [
                keys.run(run_id),
                keys.run_waiting(run_id),
                keys.run_in_flight(run_id),
                keys.run_budget(run_id),
            ]
            job_keys += [keys.job(job_id) for job_id in heads]
            run_args += [run_id, repr(priority), len(heads), *heads]
        raw = self._admit(
            keys=[keys.ADMISSION_RUNS, keys.IN_FLIGHT, *run_keys, *job_keys],
            args=[
                self.max_in_flight,
                min(self.lease_s, SEND_LEASE_S),
                max_batch,
                RunStatus.PAUSED.value,
                BUDGET_PAUSE,
                len(ADMITTING),
                *sorted(s.value for s in ADMITTING),
                len(read.runs),
                *run_args,
            ],
        )
        verdict, *flat = [decoded(v) for v in raw]
        return verdict, [Admitted(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    def sent(self, admitted: list[Admitted]) -> None:
        """These admitted jobs' messages are sent: their slots get a whole lease."""
        self.leases.renew([a.job_id for a in admitted])

    def in_flight(self) -> list[str]:
        return [decoded(v) for v in self.redis.zrange(keys.IN_FLIGHT, 0, -1)]

    def release(self, run_id: str, job_id: str) -> None:
        """Free a slot held by a job that has left the provider (cleanup after a crash)."""
        with self.redis.pipeline() as pipe:
            pipe.zrem(keys.IN_FLIGHT, job_id)
            pipe.srem(keys.run_in_flight(run_id), job_id)
            pipe.execute()

    def requeue(self, run_id: str, job_id: str, priority: int) -> bool:
        """Return a slot taken by a job that did not start (its run is paused)."""
        done = self._requeue(
            keys=[
                keys.IN_FLIGHT,
                keys.run_in_flight(run_id),
                keys.run_waiting(run_id),
                keys.ADMISSION_RUNS,
                keys.run_budget(run_id),
                keys.job(job_id),
                keys.run(run_id),
            ],
            args=[job_id, run_id, waiting_score(priority, 0)],
        )
        return bool(done)

    def waiting(self, run_id: str) -> int:
        return int(self.redis.zcard(keys.run_waiting(run_id)))

    def holding(self, run_id: str) -> int:
        """How many of the run's jobs hold a slot: admitted and not yet sent count, as
        well as those at the provider."""
        return int(self.redis.scard(keys.run_in_flight(run_id)))


def admission_for(store: JobStore, settings: Settings | None = None) -> Admission:
    """The admission of these settings (defaults when none are given)."""
    settings = settings or Settings()
    return Admission(store, max_in_flight=settings.max_in_flight, lease_s=settings.lease_s)
