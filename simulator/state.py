"""The generations the simulator holds and the counters ``GET /_sim/stats`` reports.

Owned by the server's event loop: only code running on that loop touches a
:class:`Store`; other threads go through :class:`simulator.server.SimHandle`, which hops
onto the loop. The rules (what a generation object looks like, which filters match, what
counts as a duplicate) are pure functions.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

QUEUED, PROCESSING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "processing",
    "succeeded",
    "failed",
    "cancelled",
)
ACTIVE = frozenset({QUEUED, PROCESSING})
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
STATUSES = ACTIVE | TERMINAL
MEDIA_TYPE = "video"
# Body keys of an enqueue that steer the queue rather than the model.
QUEUE_KEYS = frozenset({"model", "num_generations", "target_namespace"})
LIST_FILTERS = ("namespace", "model", "status", "media_type", "repo", "folder")
HISTORY_FILTERS = ("model", "status", "media_type")
MAX_PAGE_SIZE = 1000
ACCOUNT = {"user_id": "user-sim", "username": "simulator"}


@dataclass
class Generation:
    """One generation; ``params`` are the submitted model parameters, echoed verbatim."""

    generation_id: str
    model: str
    params: dict[str, Any]
    seq: int
    enqueued_at: int
    namespace: str | None = None
    status: str = QUEUED
    error_message: str | None = None
    started_at: int | None = None
    completed_at: int | None = None
    video: bytes | None = None
    cost: float | None = None  # what was charged: set when it succeeds
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


def generation_object(gen: Generation, result_url: str | None) -> dict[str, Any]:
    """The documented status object: parameters echoed, then the always-present fields
    (which win should a parameter share a name with one of them)."""
    return {
        **gen.params,
        **({"target_namespace": gen.namespace} if gen.namespace is not None else {}),
        "generation_id": gen.generation_id,
        "model_name": gen.model,
        "prompt": gen.params.get("prompt"),
        "media_type": MEDIA_TYPE,
        "status": gen.status,
        "result_url": result_url if gen.status == SUCCEEDED else None,
        "error_message": gen.error_message if gen.status == FAILED else None,
        "enqueued_at": gen.enqueued_at,
        "started_at": gen.started_at,
        "completed_at": gen.completed_at,
    }


def billed_object(gen: Generation, result_url: str | None) -> dict[str, Any]:
    """A row of ``GET /api/ai/generations``: the status object plus ``cost`` (a decimal
    string, null before charging) and the account's user fields."""
    cost = None if gen.cost is None else f"{gen.cost:.4f}"
    return {**generation_object(gen, result_url), "cost": cost, **ACCOUNT}


def history_rows(
    gens: Iterable[Generation], filters: dict[str, str], page: int, page_size: int
) -> tuple[list[Generation], int, float]:
    """One page of the account's generations (every status unless filtered), newest
    first, how many match in all and their total cost. ``gens`` are in enqueue order."""
    picked = [g for g in reversed(list(gens)) if in_history(g, filters)]
    start = (page - 1) * page_size
    total_cost = sum(g.cost for g in picked if g.cost is not None)
    return picked[start : start + page_size], len(picked), total_cost


def in_history(gen: Generation, filters: dict[str, str]) -> bool:
    """Whether ``gen`` passes the history's filters: every status unless one is given."""
    fields = {"model": gen.model, "status": gen.status, "media_type": MEDIA_TYPE}
    return all(fields[name] == value for name, value in filters.items() if name in fields)


def matches(gen: Generation, filters: dict[str, str]) -> bool:
    """Whether ``gen`` passes the list filters.

    Without ``status`` only active generations are listed (documented). ``namespace``
    matches the submitted ``target_namespace``; ``repo`` and ``folder`` match echoed
    parameters of those names, which this model does not have, so they match nothing.
    """
    status = filters.get("status")
    if status is None and gen.status not in ACTIVE:
        return False
    fields: dict[str, Any] = {
        "namespace": gen.namespace,
        "model": gen.model,
        "status": gen.status,
        "media_type": MEDIA_TYPE,
        "repo": gen.params.get("repo"),
        "folder": gen.params.get("folder"),
    }
    return all(fields[name] == value for name, value in filters.items() if name in fields)


def duplicate_key(model: str, params: dict[str, Any]) -> str:
    """Equal for two enqueues with the same model and model parameters."""
    return json.dumps([model, params], sort_keys=True, default=str)


@dataclass
class Store:
    """All generations (in enqueue order, which is also the FIFO start order) and counters."""

    generations: dict[str, Generation] = field(default_factory=dict)
    seen_keys: set[str] = field(default_factory=set)
    enqueued: int = 0
    generations_created: int = 0
    duplicate_enqueues: int = 0
    max_concurrent: int = 0
    max_active: int = 0  # peak of queued + processing: what a client's in-flight cap bounds
    downloads: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    events_sent: Counter[str] = field(default_factory=Counter)

    def add(self, gen: Generation) -> None:
        self.generations[gen.generation_id] = gen
        self.generations_created += 1
        active = sum(1 for g in self.generations.values() if g.status in ACTIVE)
        self.max_active = max(self.max_active, active)

    def note_enqueue(self, model: str, params: dict[str, Any]) -> None:
        key = duplicate_key(model, params)
        self.enqueued += 1
        if key in self.seen_keys:
            self.duplicate_enqueues += 1
        self.seen_keys.add(key)

    def processing_count(self) -> int:
        return sum(1 for g in self.generations.values() if g.status == PROCESSING)

    def next_queued(self) -> Generation | None:
        return next((g for g in self.generations.values() if g.status == QUEUED), None)

    def note_started(self) -> None:
        self.max_concurrent = max(self.max_concurrent, self.processing_count())

    def stats(self, subscribers: int) -> dict[str, Any]:
        by_status = Counter(g.status for g in self.generations.values())
        return {
            "enqueued": self.enqueued,
            "generations": self.generations_created,
            "duplicate_enqueues": self.duplicate_enqueues,
            "max_concurrent": self.max_concurrent,
            "max_active": self.max_active,
            "processing": by_status[PROCESSING],
            "queued": by_status[QUEUED],
            "by_status": {s: by_status[s] for s in sorted(STATUSES)},
            "requests": dict(self.requests),
            "downloads": self.downloads,
            "faults": dict(self.faults),
            "events_sent": dict(self.events_sent),
            "subscribers": subscribers,
        }
