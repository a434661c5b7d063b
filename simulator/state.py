"""The generations the simulator holds and the counters ``GET /_sim/stats`` reports.

Owned by the server's event loop: only code running on that loop touches a
:class:`Store`; other threads go through :class:`simulator.server.SimHandle`, which hops
onto the loop. The rules (what a generation object looks like, which filters match, what
counts as a duplicate) are pure functions.

A real account holds hundreds of thousands of past generations, so nothing here scans
them all on a hot path: the active and the queued ones have indexes of their own (the
scheduler and the lean ``GET /api/ai/queue`` read only them), every filter value keeps
the positions of the rows it matches (a page walks back the narrowest of them), and the
totals of ``GET /api/ai/generations`` are kept per model and status as generations
change.
"""

from __future__ import annotations

import asyncio
import json
from bisect import bisect_left, insort
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
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
QUEUE_KEYS = frozenset(
    {"model", "num_generations", "target_namespace", "target_repo", "target_directory"}
)
LIST_FILTERS = ("namespace", "model", "status", "media_type", "repo", "folder")
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
# The account the simulator's key belongs to (rows of /api/ai/generations name it).
ACCOUNT_USER_ID = "5a1d0c1e-0000-4000-8000-00000000005e"
ACCOUNT_USERNAME = "simulator"


def _finished() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass(slots=True)
class Target:
    """Where the caller asked results to be stored (echoed on every row; not acted on)."""

    namespace: str | None = None
    repo: str | None = None
    directory: str | None = None


@dataclass(slots=True)
class Generation:
    """One generation; ``params`` are the submitted model parameters, echoed verbatim."""

    generation_id: str
    model: str
    params: dict[str, Any]
    seq: int
    enqueued_at: int
    target: Target = field(default_factory=Target)
    status: str = QUEUED
    error_message: str | None = None
    started_at: int | None = None
    completed_at: int | None = None
    video: bytes | None = None
    cost: float | None = None  # what it is charged, set when it succeeds
    retried_from_id: str | None = None  # made by POST /api/ai/queue/{id}/retry
    past: bool = False  # a row of the account's history, not made by this simulator run
    pos: int = -1  # place in the store's enqueue order, set when it is stored
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @classmethod
    def from_history(cls, **fields: Any) -> Generation:
        """A finished past generation: no event of its own to wait on (100,000 of them)."""
        return cls(past=True, done=_PAST_DONE, **fields)


_PAST_DONE = _finished()


def generation_object(gen: Generation, result_url: str | None) -> dict[str, Any]:
    """The documented status object (``QueueGenerationResponse``): parameters echoed,
    then the always-present fields (which win should a parameter share a name)."""
    body = {
        **gen.params,
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
        "target_namespace": gen.target.namespace,
        "target_repo": gen.target.repo,
        "target_directory": gen.target.directory,
    }
    if gen.retried_from_id is not None:
        body["retried_from_id"] = gen.retried_from_id
    return body


def money(amount: float) -> str:
    """A charged amount as the API writes it: a decimal string."""
    return f"{amount:.6f}"


def billed_object(gen: Generation, result_url: str | None) -> dict[str, Any]:
    """A row of ``GET /api/ai/generations``: the status object plus ``cost`` (null until
    charged: only a succeeded generation is) and the account's user fields."""
    charged = gen.cost if gen.status == SUCCEEDED else None
    return {
        **generation_object(gen, result_url),
        "cost": money(charged) if charged is not None else None,
        "user_id": ACCOUNT_USER_ID,
        "username": ACCOUNT_USERNAME,
        "user_image": None,
    }


def _kind_key(model: str, status: str) -> tuple[str, str]:
    return ("model+status", f"{model}\n{status}")


def _status_keys(model: str, status: str) -> tuple[tuple[str, str], ...]:
    """The index keys that change with a row's status."""
    return (("status", status), _kind_key(model, status))


def _index_keys(gen: Generation) -> list[tuple[str, str]]:
    """Every index a row belongs to (``media_type`` is always video: none)."""
    keys = [(name, value) for name, value in _indexed_values(gen).items() if value is not None]
    return [*keys, _kind_key(gen.model, gen.status)]


def _indexed_values(gen: Generation) -> dict[str, str | None]:
    """The values of a row that its filters compare (``media_type`` is always video)."""
    return {
        "status": gen.status,
        "model": gen.model,
        "namespace": gen.target.namespace,
        "repo": gen.target.repo,
        "folder": gen.target.directory,
    }


def matches(gen: Generation, filters: dict[str, str]) -> bool:
    """Whether ``gen`` passes the filters of either list (a missing filter matches all).

    ``namespace``, ``repo`` and ``folder`` match the target the enqueue named.
    """
    fields: dict[str, str | None] = {**_indexed_values(gen), "media_type": MEDIA_TYPE}
    return all(fields[name] == value for name, value in filters.items() if name in fields)


def duplicate_key(model: str, params: dict[str, Any]) -> str:
    """Equal for two enqueues with the same model and model parameters."""
    return json.dumps([model, params], sort_keys=True, default=str)


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Generation]
    total_entries: int
    total_cost: float | None


# Filters with an index of their own (the positions of the rows they match); model and
# status together have one too (a reconcile pages one model, an audit its successes).
INDEXED = ("status", "model", "namespace", "repo", "folder")


@dataclass
class Store:
    """All generations in enqueue order (also the FIFO start order), indexes of the
    active and queued ones and of the rows each filter value matches, totals per
    (model, status), and the counters of ``/_sim/stats``."""

    generations: dict[str, Generation] = field(default_factory=dict)
    ordered: list[Generation] = field(default_factory=list)  # a row's place is its ``pos``
    active: dict[str, Generation] = field(default_factory=dict)
    queued: dict[str, Generation] = field(default_factory=dict)
    # (filter, value) -> positions in ``ordered``, ascending. Only the status of a row
    # changes, so only the status lists are ever re-sorted (a row near their end).
    index: defaultdict[tuple[str, str], list[int]] = field(
        default_factory=lambda: defaultdict(list)
    )
    by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    past_by_status: Counter[str] = field(default_factory=Counter)
    cost_by_model: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    seen_keys: set[str] = field(default_factory=set)
    enqueued: int = 0
    generations_created: int = 0
    retried: int = 0
    duplicate_enqueues: int = 0
    max_concurrent: int = 0
    max_active: int = 0  # peak of queued + processing: what a client's in-flight cap bounds
    downloads: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    events_sent: Counter[str] = field(default_factory=Counter)

    def add(self, gen: Generation) -> None:
        """A generation made now (an enqueue or a retry)."""
        self._insert(gen)
        self.generations_created += 1
        self.max_active = max(self.max_active, len(self.active))

    def add_past(self, gen: Generation) -> None:
        """A row of the account's history: listed, never counted as this run's work.
        It is finished, so its status never changes."""
        self._insert(gen)
        self.past_by_status[gen.status] += 1

    def _insert(self, gen: Generation) -> None:
        gen.pos = len(self.ordered)
        self.ordered.append(gen)
        self.generations[gen.generation_id] = gen
        for key in _index_keys(gen):
            self.index[key].append(gen.pos)
        self.by_kind[(gen.model, gen.status)] += 1
        if gen.status in ACTIVE:
            self.active[gen.generation_id] = gen
        if gen.status == QUEUED:
            self.queued[gen.generation_id] = gen
        self._charge(gen)

    def set_status(self, gen: Generation, status: str) -> None:
        """Every status change goes through here, so the indexes and totals stay true."""
        for key in _status_keys(gen.model, gen.status):
            old = self.index[key]
            del old[bisect_left(old, gen.pos)]
        self.by_kind[(gen.model, gen.status)] -= 1
        gen.status = status
        self.by_kind[(gen.model, status)] += 1
        for key in _status_keys(gen.model, status):
            insort(self.index[key], gen.pos)
        if status != QUEUED:
            self.queued.pop(gen.generation_id, None)
        if status not in ACTIVE:
            self.active.pop(gen.generation_id, None)
        self._charge(gen)

    def _charge(self, gen: Generation) -> None:
        if gen.status == SUCCEEDED and gen.cost is not None:
            self.cost_by_model[gen.model] += gen.cost

    def note_enqueue(self, model: str, params: dict[str, Any]) -> None:
        key = duplicate_key(model, params)
        self.enqueued += 1
        if key in self.seen_keys:
            self.duplicate_enqueues += 1
        self.seen_keys.add(key)

    def processing_count(self) -> int:
        return len(self.active) - len(self.queued)

    def next_queued(self) -> Generation | None:
        return next(iter(self.queued.values()), None)

    def note_started(self) -> None:
        self.max_concurrent = max(self.max_concurrent, self.processing_count())

    def listed(self, filters: dict[str, str]) -> Iterator[Generation]:
        """``GET /api/ai/queue``: the active rows unless a status is asked for (then every
        row of it, in enqueue order: unbounded, as documented; history is paged)."""
        if "status" not in filters:
            return (g for g in self.active.values() if matches(g, filters))
        positions, _exact = self._candidates(filters)
        return (g for g in map(self.ordered.__getitem__, positions) if matches(g, filters))

    def page(self, filters: dict[str, str], page: int, page_size: int) -> Page:
        """One page of ``GET /api/ai/generations``, newest first, with the filter's
        totals. A filter with an index of its own (any one filter, or model and status)
        is a slice of it; otherwise the narrowest index is walked back only as far as
        the page reaches."""
        positions, exact = self._candidates(filters)
        skip = (page - 1) * page_size
        if exact:
            end = max(len(positions) - skip, 0)
            picked = positions[max(end - page_size, 0) : end]
            rows = [self.ordered[p] for p in reversed(picked)]
        else:
            newest_first = (
                g for g in map(self.ordered.__getitem__, reversed(positions)) if matches(g, filters)
            )
            rows = list(islice(newest_first, skip, skip + page_size))
        total, cost = self._totals(filters, positions)
        return Page(rows, total, cost)

    def _candidates(self, filters: dict[str, str]) -> tuple[Sequence[int], bool]:
        """Positions (ascending) of every row the filters can match, and whether exactly
        those rows match: the narrowest index the filters name, or every row."""
        if filters.get("media_type", MEDIA_TYPE) != MEDIA_TYPE:
            return (), True
        named = [name for name in INDEXED if name in filters]
        if not named:
            return range(len(self.ordered)), True
        if set(named) == {"model", "status"}:
            return self.index.get(_kind_key(filters["model"], filters["status"]), []), True
        lists = [self.index.get((name, filters[name]), []) for name in named]
        return min(lists, key=len), len(named) == 1

    def _totals(
        self, filters: dict[str, str], candidates: Sequence[int]
    ) -> tuple[int, float | None]:
        if set(filters) - {"model", "status", "media_type"}:
            picked = [g for g in map(self.ordered.__getitem__, candidates) if matches(g, filters)]
            costs = [g.cost for g in picked if g.status == SUCCEEDED and g.cost is not None]
            return len(picked), (sum(costs) if costs else None)
        if not candidates:
            return 0, None
        model, status = filters.get("model"), filters.get("status")
        total = sum(
            n
            for (m, s), n in self.by_kind.items()
            if (model is None or m == model) and (status is None or s == status)
        )
        if status not in (None, SUCCEEDED):
            return total, None
        cost = sum(c for m, c in self.cost_by_model.items() if model is None or m == model)
        charged = any(
            n and s == SUCCEEDED and (model is None or m == model)
            for (m, s), n in self.by_kind.items()
        )
        return total, cost if charged else None

    def stats(self, subscribers: int) -> dict[str, Any]:
        """This run's work; the account's history is not counted (``history``)."""
        by_status: Counter[str] = Counter()
        for (_model, status), n in self.by_kind.items():
            by_status[status] += n
        by_status.subtract(self.past_by_status)
        return {
            "enqueued": self.enqueued,
            "generations": self.generations_created,
            "retried": self.retried,
            "duplicate_enqueues": self.duplicate_enqueues,
            "max_concurrent": self.max_concurrent,
            "max_active": self.max_active,
            "processing": by_status[PROCESSING],
            "queued": by_status[QUEUED],
            "by_status": {s: by_status[s] for s in sorted(STATUSES)},
            "history": self.past_by_status.total(),
            "requests": dict(self.requests),
            "downloads": self.downloads,
            "faults": dict(self.faults),
            "events_sent": dict(self.events_sent),
            "subscribers": subscribers,
        }
