"""The tick's time step: starts scheduled runs whose ``start_at`` has passed, pauses
runs outside their submission window and resumes them inside it; and where the tick
sees a run end (:class:`RunWatch`, the runs whose events ``worker.notify`` announces).

Only runs in ``keys.TIMED_RUNS`` are read. A paused run's jobs in flight finish (the
pause only stops admission). Every change is a compare-and-set on the run's status and
reason (``worker/lua/swap_run_status.lua``), so an operator's pause or cancel made
meanwhile is never overwritten. Like ``producer.timing``, this module is the gateway to
the run-timing keys it reads and writes (``keys.TIMED_RUNS``, a run's timing fields),
and to the notification keys (``keys.NOTIFY_WATCH``, ``NOTIFY_CURSOR``,
``run_notified``): an event is claimed by SET NX before it is sent, so two workers
ticking, or one ticking twice, announce it once. A worker killed while sending leaves
its claim ``sending`` until the claim's hold passes; the next tick then takes it over
and sends the event after all (:meth:`RunWatch.claim`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import redis

from seedq import keys
from seedq.contract import RunStatus
from seedq.notify import RunState, run_finished
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
    """A run the time step can forget: cancelled, or finished (every job of it ended)."""
    return status == RunStatus.CANCELLED or run_finished(status, counts, total)


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


# -- where runs end: the runs whose events are announced ---------------------------------

SENDING = "sending"


@dataclass(frozen=True, slots=True)
class WatchedRun:
    """A watched run as the tick read it."""

    state: RunState
    name: str = ""
    created_at: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


class RunWatch:
    """The runs the tick watches for an event, and each event's exactly-once claim."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def scan(self, now_s: float, *, lookback_s: float) -> list[WatchedRun]:
        """Watch the runs created since the last scan (the first scan looks back
        ``lookback_s``), then read every watched run in one round trip."""
        raw_cursor = self.redis.get(keys.NOTIFY_CURSOR)
        since = float(raw_cursor) if raw_cursor else now_s - lookback_s
        new: Any = self.redis.zrangebyscore(keys.RUNS, f"({since!r}", "+inf", withscores=True)
        if new:
            self.redis.sadd(keys.NOTIFY_WATCH, *[decoded(run_id) for run_id, _ in new])
            since = max(float(score) for _, score in new)
        if new or not raw_cursor:
            self.redis.set(keys.NOTIFY_CURSOR, repr(since))
        run_ids = sorted(decoded(v) for v in self.redis.smembers(keys.NOTIFY_WATCH))
        found = self.read(run_ids)
        for run_id, run in zip(run_ids, found, strict=True):
            if run is None:  # gone from Redis (pruned, flushed): nothing left to tell
                self.forget(run_id)
        return [run for run in found if run is not None]

    def read(self, run_ids: list[str]) -> list[WatchedRun | None]:
        """Each run (None when it is not in Redis), in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.hgetall(keys.run(run_id))
                pipe.hgetall(keys.run_counts(run_id))
                pipe.llen(keys.run_jobs(run_id))
                pipe.scard(keys.run_in_flight(run_id))
            rows = pipe.execute()
        found: list[WatchedRun | None] = []
        for i, run_id in enumerate(run_ids):
            raw, raw_counts, total, holding = rows[4 * i : 4 * i + 4]
            data = {decoded(k): decoded(v) for k, v in raw.items()}
            if not data:
                found.append(None)
                continue
            state = RunState(
                run_id=run_id,
                status=data.get("status", ""),
                reason=data.get("reason", ""),
                paused_by=data.get("paused_by", ""),
                counts={decoded(k): int(v) for k, v in raw_counts.items()},
                total=int(total),
                holding=int(holding),
            )
            meta = json.loads(data.get("meta") or "{}")
            created = float(data.get("created_at") or 0.0)
            found.append(WatchedRun(state, data.get("name", ""), created, meta))
        return found

    def forget(self, run_id: str) -> None:
        self.redis.srem(keys.NOTIFY_WATCH, run_id)

    def claim(self, run_id: str, event_key: str, *, now_s: float, hold_s: float) -> bool:
        """Take this event for sending, for ``hold_s`` at most; False when it is held by
        another sender, or was sent or given up already.

        A claim still ``sending`` past its hold was left by a sender that died: it is
        taken over (compare-and-set, so by one ticker only) and the event is sent after
        all. Were that sender only slow, the event goes twice, with the same delivery id
        for the receiver to drop the second; a hold far longer than a sender's retries
        makes that rare."""
        key = keys.run_notified(run_id, event_key)
        mine = f"{SENDING}:{now_s + hold_s!r}"
        if self.redis.set(key, mine, nx=True, ex=keys.NOTIFIED_TTL_S):
            return True
        seen = decoded(self.redis.get(key))
        if not seen.startswith(SENDING + ":"):
            return False  # sent, or given up
        try:
            held_until = float(seen.split(":", 1)[1])
        except ValueError:
            held_until = 0.0
        return held_until <= now_s and self._swap(key, seen, mine)

    def _swap(self, key: str, seen: str, value: str) -> bool:
        take_over = self.redis.register_script(load("take_over_claim", "worker"))
        return bool(take_over(keys=[key], args=[seen, value]))

    def settle(self, run_id: str, event_key: str, outcome: str) -> None:
        """Record how the claimed event's sending ended (``sent``, ``failed``)."""
        key = keys.run_notified(run_id, event_key)
        self.redis.set(key, outcome, xx=True, keepttl=True)

    def outcome(self, run_id: str, event_key: str) -> str | None:
        """``sending``, ``sent`` or ``failed``; None while the event is not claimed."""
        raw = self.redis.get(keys.run_notified(run_id, event_key))
        return decoded(raw).split(":", 1)[0] if raw else None
