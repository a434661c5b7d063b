"""Stuck generations: the pure decisions (worker.unsticking does the I/O around them).

A generation is *stuck* when it has been ``processing`` for ``stuck_after_s`` since the
provider's own ``started_at``. A generation merely ``queued`` is waiting for capacity,
not stuck, and one whose start the provider does not report is never judged stuck.
Both clocks are compared directly: a skew of seconds is nothing beside a threshold of
minutes.

A stuck generation is killed and retried once per job (``POST .../retry``, paid like an
enqueue); when the retry is stuck too, or the provider refuses to retry it, the job
gives up: its generation is cancelled and the job fails with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from provider.models import Generation
from worker.reconcile import Reconciled, Verdict

PROCESSING = "processing"
STILL_RUNNING = frozenset({"queued", PROCESSING})


class Stuck(StrEnum):
    NO = "no"  # not stuck (or a retry must wait for its run to admit again)
    RETRY = "retry"  # kill it and retry: the job's one retry
    GIVE_UP = "give_up"  # stuck after the retry, or the retry was refused: cancel, fail


def stuck_for_s(status: str, started_at: float | None, *, now: float) -> float | None:
    """How long a generation has been processing; None when it is not processing or its
    start is unknown."""
    if status != PROCESSING or started_at is None:
        return None
    return max(0.0, now - started_at)


def is_stuck(gen: Generation, *, now: float, stuck_after_s: float) -> bool:
    """Whether a listed (or fetched) generation has been processing too long."""
    running = stuck_for_s(str(gen.status), gen.started_at, now=now)
    return running is not None and running >= stuck_after_s


def judge(
    gen: Generation,
    *,
    now: float,
    stuck_after_s: float,
    retried: bool,
    refused: bool,
    may_retry: bool,
) -> Stuck:
    """What to do with a job's generation, as the provider reports it.

    ``retried``: the job used its one retry already (this generation is the retry).
    ``refused``: the provider refused to retry this very generation.
    ``may_retry``: the job's run admits new work (a retry is a new paid generation, so it
    waits while the run is paused; giving up spends nothing and never waits)."""
    if not is_stuck(gen, now=now, stuck_after_s=stuck_after_s):
        return Stuck.NO
    if retried or refused:
        return Stuck.GIVE_UP
    return Stuck.RETRY if may_retry else Stuck.NO


def worth_tracking(*, retried: bool, may_retry: bool) -> bool:
    """Whether the sweep sends a track task for a job whose generation is stuck: when
    the track step would act on it (see :func:`judge`; ``retried`` stands for
    ``retried or refused`` there)."""
    return retried or may_retry


def retried_from(gen: Generation) -> str | None:
    """The generation a row was retried from (``retried_from_id``, API 0.257)."""
    value = (gen.model_extra or {}).get("retried_from_id")
    return value if isinstance(value, str) and value else None


def find_retry(
    rows: Iterable[Generation],
    *,
    retried_id: str,
    sent_at: float,
    now: float,
    grace_s: float,
    settled: bool = False,
    taken: frozenset[str] = frozenset(),
) -> Reconciled:
    """Decide a retry whose answer was lost from the account's history: the rows whose
    ``retried_from_id`` is ``retried_id``, other jobs' generations (``taken``) aside.

    ``now`` is when the history was first read: absence proves the retry never arrived
    only once that read began more than ``grace_s`` after the retry was sent, or when
    the call was ``settled`` (the origin answered, even with an error: anything it made
    is in the history already)."""
    found: dict[str, Generation] = {}
    for row in rows:
        if retried_from(row) == retried_id and row.generation_id not in taken:
            found.setdefault(row.generation_id, row)  # one row seen on two pages is one
    if len(found) == 1:
        return Reconciled(Verdict.FOUND, tuple(found.values()))
    if len(found) > 1:
        return Reconciled(Verdict.AMBIGUOUS, tuple(found.values()))
    return Reconciled(Verdict.ABSENT if settled or now - sent_at > grace_s else Verdict.WAIT)


def duration_text(seconds: float) -> str:
    """``45 min``, ``1 h 30 min`` or ``20 s``: a threshold as an operator reads it."""
    if seconds < 60:
        return f"{seconds:g} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def stuck_reason(
    *, stuck_after_s: float, generation_id: str, killed_id: str | None, refused: str | None
) -> str:
    """Why a job failed for being stuck: what was killed, what was cancelled."""
    after = duration_text(stuck_after_s)
    if killed_id:
        return (
            f"generation stuck processing for {after} twice: killed {killed_id} and retried "
            f"it once; the retry {generation_id} was stuck too and is cancelled"
        )
    why = f" ({refused})" if refused else ""
    return (
        f"generation {generation_id} stuck processing for {after}; the provider refused "
        f"to retry it{why}; it is cancelled"
    )
