"""The values the job store hands out: a run's summary (:class:`RunInfo`), a move's
outcome (:class:`Moved`), a registration's decisions, what the exporter reads
(:class:`QueueSnapshot`), and :func:`decoded`, which turns what redis-py answers into
text. Plain data, no Redis: modules that only read these import them without the store.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# Tallies in a run's hash, each counted by the move that makes it (``count=...``).
STUCK_RETRIES = "stuck_retries"  # jobs whose stuck generation was killed and retried
STUCK_FAILURES = "stuck_failures"  # jobs failed because the retry got stuck too

# The steps whose failures a job counts (worker.runner): ``{step}_attempts`` and
# ``{step}_first_failure_at``, cleared when the step's move forward succeeds.
RETRIED_STEPS = ("submit", "track", "deliver")


def failure_fields(*steps: str) -> list[str]:
    """The job fields that count these steps' failures (all steps when none named)."""
    return [f"{step}_{what}" for step in steps or RETRIED_STEPS for what in _FAILURE_PARTS]


_FAILURE_PARTS = ("attempts", "first_failure_at")


@dataclass(frozen=True, slots=True)
class Moved:
    """Outcome of a transition: ``ok`` when it happened; ``before`` is the prior state."""

    ok: bool
    verdict: str
    before: str


class Decision(StrEnum):
    NEW = "new"
    PENDING = "pending"
    ACTIVE = "active"
    DONE = "done"
    CHANGED = "changed"


@dataclass(slots=True)
class RegisterResult:
    """How many jobs each decision got; ``to_enqueue`` are the ids to send tasks for."""

    counts: dict[Decision, int] = field(default_factory=lambda: {d: 0 for d in Decision})
    to_enqueue: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RunInfo:
    id: str
    name: str
    created_at: float
    status: str
    total: int
    counts: dict[str, int]
    meta: dict[str, Any]
    reason: str = ""  # why the run is paused, for the operator
    # Jobs whose generation was killed and retried for being stuck, and those that then
    # failed for being stuck again (tallied by the moves themselves: ``count``).
    stuck_retries: int = 0
    stuck_failures: int = 0

    @property
    def shown_status(self) -> str:
        """The status for people: ``finished`` once an active run has no job left to end
        (the stored status stays ``active``, so ``seedq retry`` can re-drive it), with
        the reason when there is one."""
        status = self.status
        ended = sum(self.counts.get(s, 0) for s in ("delivered", "failed", "cancelled"))
        if status == "active" and self.total and ended >= self.total:
            status = "finished"
        return f"{status} ({self.reason})" if self.reason else status


@dataclass(frozen=True, slots=True)
class RunGauges:
    """One recent run as the exporter reads it (``JobStore.queue_snapshot``): its jobs
    by state (the run's counters), its waiting queue's length and its money."""

    run_id: str
    name: str
    status: str
    counts: dict[str, int]
    waiting: int  # jobs registered and not yet admitted
    spent: float = 0.0
    reserved: float = 0.0
    cap: float | None = None  # the run's budget; None: no cap


@dataclass(frozen=True, slots=True)
class WaitingRun:
    """A run in admission's set (it has waiting jobs), whatever its status."""

    run_id: str
    name: str
    status: str
    waiting: int
    # ``updated_at`` (seconds) of the job at the head of its queue, the next to be
    # admitted: when it last changed state. None: no head (emptied meanwhile).
    head_since: float | None = None


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """What ``seedq exporter`` serves, as read in a few round trips (seedq.gauges)."""

    in_flight: int  # jobs holding an in-flight slot
    runs: list[RunGauges]  # the most recent runs, oldest first
    offered: list[WaitingRun]  # the runs in admission's set


def decoded(value: Any) -> str:
    """A value read from Redis as text (redis-py answers bytes unless told otherwise);
    a missing one (None) reads as ``""``."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def new_run_id() -> str:
    """Sortable by creation time, unique without coordination."""
    return time.strftime("r%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:6]


# Job priorities run from -1000 to 1000 (producer.jobs); the sequence, below
# a billion keeps first in, first out among equal priorities.
PRIORITY_SPAN = 1000
SEQUENCE_SPAN = 1e9


def waiting_score(priority: int, sequence: int) -> float:
    """A job's score in its run's waiting queue: higher priority first, then first in
    (``sequence``: ``keys.SEQUENCE`` at registration; 0 puts it at the head of its
    priority). The store's register script (seedq/lua/register.lua) computes the same
    (a test checks)."""
    return (PRIORITY_SPAN - priority) * SEQUENCE_SPAN + sequence
