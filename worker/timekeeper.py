"""The tick's time step: starts scheduled runs whose ``start_at`` has passed, pauses
runs outside their submission window and resumes them inside it.

Only runs in ``keys.TIMED_RUNS`` are read. A paused run's jobs in flight finish (the
pause only stops admission). Every change is a compare-and-set on the run's status and
reason (``worker/lua/swap_run_status.lua``), so an operator's pause or cancel made
meanwhile is never overwritten. Like ``producer.timing``, this module is the gateway to
the run-timing keys it reads and writes (``keys.TIMED_RUNS``, a run's timing fields).
"""

from __future__ import annotations

import logging

import redis

from seedq import keys
from seedq.contract import TERMINAL_STATES, RunStatus
from seedq.scripts import load
from seedq.store import decoded
from seedq.windows import Change, TimedRun, decide

log = logging.getLogger(__name__)


def _timed_run(data: dict[str, str]) -> TimedRun:
    start = data.get("start_at")
    return TimedRun(
        status=data.get("status", ""),
        reason=data.get("reason", ""),
        paused_by=data.get("paused_by", ""),
        start_at=float(start) if start else None,
        window=data.get("window", ""),
        tz=data.get("tz", "UTC") or "UTC",
    )


def finished(status: str, counts: dict[str, int], total: int) -> bool:
    """A run the time step can forget: cancelled, or every job of it terminal."""
    if status == RunStatus.CANCELLED:
        return True
    if status in (RunStatus.SCHEDULED, RunStatus.REGISTERING) or total == 0:
        return False
    return sum(counts.get(str(s), 0) for s in TERMINAL_STATES) >= total


def apply_timing(client: redis.Redis, now_s: float) -> list[tuple[str, Change]]:
    """Decide and apply the time step for every timed run; returns what changed."""
    run_ids = sorted(decoded(v) for v in client.smembers(keys.TIMED_RUNS))
    if not run_ids:
        return []
    with client.pipeline(transaction=False) as pipe:
        for run_id in run_ids:
            pipe.hgetall(keys.run(run_id))
            pipe.hgetall(keys.run_counts(run_id))
            pipe.llen(keys.run_jobs(run_id))
        rows = pipe.execute()
    swap = client.register_script(load("swap_run_status", "worker"))
    changed: list[tuple[str, Change]] = []
    for i, run_id in enumerate(run_ids):
        raw, raw_counts, total = rows[3 * i], rows[3 * i + 1], rows[3 * i + 2]
        data = {decoded(k): decoded(v) for k, v in raw.items()}
        counts = {decoded(k): int(v) for k, v in raw_counts.items()}
        run = _timed_run(data)
        if not data or finished(run.status, counts, int(total)):
            client.srem(keys.TIMED_RUNS, run_id)
            continue
        try:
            change = decide(run, now_s)
        except Exception:  # a bad zone or window stored by hand: say so, skip the run
            log.exception("run %s: cannot apply its timing", run_id)
            continue
        if change is None:
            continue
        args = [change.expect_status, change.expect_reason, change.status, change.reason]
        if swap(keys=[keys.run(run_id)], args=[*args, change.paused_by]):
            log.info("run %s: %s -> %s %s", run_id, run.status, change.status, change.reason)
            changed.append((run_id, change))
    return changed
