"""Leases: how the tick tells a job whose worker died from one still being worked on.

A slot lease (``keys.IN_FLIGHT``, score: expiry in server time) is taken by admission
with the slot and renewed while the job is seen alive; once expired, nobody has heard
of the job for ``lease_s`` and the tick re-drives it (its step message sent again, safe
since every step is a compare-and-set), keeping its slot, as its generation may still
be running at the provider. A delivery lease (``keys.DELIVERING``, score: when last
heard of) does the same for a generated job being delivered, so a worker killed
mid-delivery does not leave it generated. Scripts: ``seedq/lua`` (``extend``,
``expired``, ``stalled``, ``expire_all``).
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from seedq import keys
from seedq.scripts import load
from seedq.store import decoded


class Leases:
    """Slot and delivery leases, timed by the Redis server's clock."""

    def __init__(self, client: redis.Redis, *, lease_s: float) -> None:
        self.redis = client
        self.lease_s = lease_s
        self._extend = client.register_script(load("extend"))
        self._expired = client.register_script(load("expired"))
        self._stalled = client.register_script(load("stalled"))
        self._expire_all = client.register_script(load("expire_all"))

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
