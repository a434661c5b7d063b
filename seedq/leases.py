"""Leases: how the tick tells a job whose worker died from one still being worked on.

A slot lease (``keys.IN_FLIGHT``, score: expiry in server time) is taken by admission
with the slot and renewed while the job is seen alive; once expired, nobody has heard
of the job for ``lease_s`` and the tick re-drives it (its step message sent again, safe
since every step is a compare-and-set), keeping its slot, as its generation may still
be running at the provider. A delivery lease (``keys.DELIVERING``, score: when last
heard of) does the same for a generated job being delivered, so a worker killed
mid-delivery does not leave it generated.

Leases are the last resort. The first is the holder: each worker process beats a
heartbeat (``keys.worker_alive``, a short TTL) and records the job messages it has
received and not finished (``keys.worker_held``). A beat renews the leases of what the
process holds, so a slow step on a live worker is never re-driven; once the heartbeat
lapses, the tick reaps the process (:meth:`Leases.reap_dead`) and sends its jobs' steps
again within seconds, not after ``lease_s``. Scripts: ``seedq/lua`` (``extend``,
``expired``, ``stalled``, ``expire_all``, ``beat``, ``reap``, ``forget_reaped``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import redis

from seedq import keys
from seedq.scripts import load
from seedq.store import decoded


@dataclass(frozen=True, slots=True)
class Held:
    """A job message a dead worker process had received and not finished."""

    job_id: str
    eta_s: float  # when it was due to run (epoch seconds); 0: at once


@dataclass(frozen=True, slots=True)
class Reaped:
    """What the tick took over from worker processes whose heartbeat lapsed; forgotten
    (:meth:`Leases.forget_reaped`) once sent again."""

    workers: list[str]
    held: list[Held]
    task_ids: dict[str, list[str]] = field(default_factory=dict)  # worker -> its held tasks


class Leases:
    """Slot and delivery leases, timed by the Redis server's clock."""

    def __init__(self, client: redis.Redis, *, lease_s: float) -> None:
        self.redis = client
        self.lease_s = lease_s
        self._extend = client.register_script(load("extend"))
        self._expired = client.register_script(load("expired"))
        self._stalled = client.register_script(load("stalled"))
        self._expire_all = client.register_script(load("expire_all"))
        self._beat = client.register_script(load("beat"))
        self._reap = client.register_script(load("reap"))
        self._forget_reaped = client.register_script(load("forget_reaped"))

    def renew(self, job_ids: Iterable[str], ahead_s: float = 0.0) -> None:
        """Extend these jobs' slot leases to a full lease from now, plus ``ahead_s`` (a
        job waiting out a countdown is not dead); jobs holding no slot are left out."""
        ids = list(job_ids)
        if ids:
            self._extend(keys=[keys.IN_FLIGHT], args=[self.lease_s + ahead_s, *ids])

    def expired(self) -> list[str]:
        return [decoded(v) for v in self._expired(keys=[keys.IN_FLIGHT])]

    def expire_all(self) -> int:
        """Make every slot and delivery lease due at once, for the next tick to re-drive.

        Only for a store whose every worker is known to be dead (the private store of a
        local run, whose lock the caller holds): anywhere else it would re-drive jobs
        that live workers are on (harmless, every step being a compare-and-set, but
        wasteful). Returns how many leases were cut short."""
        return int(self._expire_all(keys=[keys.IN_FLIGHT, keys.DELIVERING]))

    def stalled_deliveries(self) -> list[str]:
        """Generated jobs whose delivery nobody has touched for ``lease_s``."""
        return [decoded(v) for v in self._stalled(keys=[keys.DELIVERING], args=[self.lease_s])]

    def touch_deliveries(self, job_ids: Iterable[str], ahead_s: float = 0.0) -> None:
        """Renew the delivery leases of these jobs, as if heard of ``ahead_s`` from now
        (those not delivering are left out)."""
        ids = list(job_ids)
        if ids:
            self._extend(keys=[keys.DELIVERING], args=[ahead_s, *ids])

    def forget_delivery(self, job_id: str) -> None:
        """Drop a delivery lease left behind by a job that is no longer generated."""
        self.redis.zrem(keys.DELIVERING, job_id)

    # -- holders: worker processes and the job messages they hold ----------------------

    def beat(self, worker_id: str, heartbeat_s: float) -> bool:
        """Prove ``worker_id`` alive for ``heartbeat_s`` and renew the leases of the jobs
        it holds; False when its heartbeat had lapsed (what it held may be re-driven)."""
        return bool(
            self._beat(
                keys=[*self._holder_keys(worker_id), keys.IN_FLIGHT, keys.DELIVERING],
                args=[worker_id, max(1, round(heartbeat_s * 1000)), self.lease_s],
            )
        )

    def hold(self, worker_id: str, task_id: str, job_id: str, eta_s: float = 0.0) -> None:
        """Record that ``worker_id`` has received task ``task_id`` of ``job_id``."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(keys.worker_held(worker_id), task_id, f"{eta_s:.3f}|{job_id}")
            # Entered here too, so a process reaped while only slow is looked at again.
            pipe.sadd(keys.WORKERS, worker_id)
            pipe.execute()

    def unhold(self, worker_id: str, *task_ids: str) -> None:
        """These tasks ended on ``worker_id`` (their follow-ups, if any, already sent), or
        it no longer has their messages."""
        if task_ids:
            self.redis.hdel(keys.worker_held(worker_id), *task_ids)

    def held_tasks(self, worker_id: str) -> set[str]:
        """The task ids ``worker_id`` is recorded as holding."""
        return {decoded(t) for t in self.redis.hkeys(keys.worker_held(worker_id))}

    def retire(self, worker_id: str) -> None:
        """A clean stop: the process finished what it ran, and the broker took back the
        messages it had received and not started, so nothing it held is re-driven."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(keys.worker_alive(worker_id), keys.worker_held(worker_id))
            pipe.srem(keys.WORKERS, worker_id)
            pipe.execute()

    def abandon(self, worker_id: str) -> None:
        """A stop that could not hand everything back: the process says itself dead now,
        not ``heartbeat_s`` from now, keeping its record of what it held, for the next
        tick to reap and send again (:meth:`reap_dead`)."""
        self.redis.delete(keys.worker_alive(worker_id))

    def reap_dead(self) -> Reaped:
        """Claim the worker processes whose heartbeat lapsed, and hand out what they
        held: to one tick at a time (one script per process), and again after
        ``keys.REAP_CLAIM_MS`` unless that tick called :meth:`forget_reaped`."""
        workers = [decoded(w) for w in self.redis.smembers(keys.WORKERS)]
        if not workers:
            return Reaped([], [])
        with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in workers:
                pipe.exists(keys.worker_alive(worker_id))
            alive = pipe.execute()
        reaped = Reaped([], [])
        for worker_id, live in zip(workers, alive, strict=True):
            if live:
                continue
            flag, *pairs = self._reap(
                keys=[
                    keys.worker_alive(worker_id),
                    keys.worker_held(worker_id),
                    keys.worker_reaping(worker_id),
                ],
                args=[keys.REAP_CLAIM_MS],
            )
            if not int(flag):
                continue  # beat again between the two reads, or another tick is on it
            reaped.workers.append(worker_id)
            reaped.task_ids[worker_id] = [decoded(t) for t in pairs[0::2]]
            reaped.held.extend(_held(decoded(v)) for v in pairs[1::2])
        return reaped

    def forget_reaped(self, reaped: Reaped) -> None:
        """What :meth:`reap_dead` handed out has been sent again: forget it."""
        for worker_id in reaped.workers:
            self._forget_reaped(
                keys=[*self._holder_keys(worker_id), keys.worker_reaping(worker_id)],
                args=[worker_id, *reaped.task_ids.get(worker_id, [])],
            )

    def delivering(self) -> list[str]:
        """The generated jobs holding a delivery lease."""
        return [decoded(v) for v in self.redis.zrange(keys.DELIVERING, 0, -1)]

    # -- after a death: jobs whose message may be nowhere ----------------------------

    def schedule_orphan_check(self, at_s: float) -> None:
        """Have the tick look for jobs whose message is nowhere at ``at_s`` (a later
        death moves it later: one check covers every death before it)."""
        self.redis.set(keys.ORPHAN_CHECK_AT, repr(at_s))

    def orphan_check_due(self, now_s: float) -> bool:
        """Whether that check is due now, forgetting it if so (one tick at a time holds
        the tick lock, so the read and the delete need no script)."""
        at = self.redis.get(keys.ORPHAN_CHECK_AT)
        if at is None or float(decoded(at)) > now_s:
            return False
        self.redis.delete(keys.ORPHAN_CHECK_AT)
        return True

    def held_jobs(self) -> set[str]:
        """The jobs some worker process holds a message of (live, or not yet reaped)."""
        workers = [decoded(w) for w in self.redis.smembers(keys.WORKERS)]
        if not workers:
            return set()
        with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in workers:
                pipe.hvals(keys.worker_held(worker_id))
            rows = pipe.execute()
        return {_held(decoded(v)).job_id for row in rows for v in row}

    @staticmethod
    def _holder_keys(worker_id: str) -> list[str]:
        return [keys.worker_alive(worker_id), keys.WORKERS, keys.worker_held(worker_id)]


def _held(value: str) -> Held:
    eta, _, job_id = value.partition("|")
    return Held(job_id, float(eta or 0))
