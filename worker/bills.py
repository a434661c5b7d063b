"""Pure decisions of billing (the I/O is in ``worker.biller``): how to ask the provider
what jobs were billed, what a row's cost means, when to look again and when to stop.

Two ways to ask (both within the poll budget):

- ``GET /api/ai/generations/{id}``: one call per generation. For a few jobs, and for
  generations the history pages cannot show (a killed stuck generation is not
  ``succeeded``; a job not found where the pages said it should be).
- pages of ``GET /api/ai/generations?model=M&status=succeeded`` (newest first): one call
  serves up to a thousand jobs when many finished together. Paging stops once every job
  is found, at a row enqueued before the oldest job was sent (minus a clock slack), at
  the last page, or after :data:`MAX_PAGES_PER_MODEL` pages, whichever comes first; a
  job the pages did not show is asked for by id next time.

A cost may still be null right after success: the job is looked at again after
:data:`LOOK_DELAYS_S` (growing, about two hours in all); after the last one its bill is
``unknown``, said as such. A null cost on a generation that did not succeed (a killed
stuck one) is taken as nothing charged: the provider charges for what it made.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from provider.protocol import MAX_PAGE_SIZE

# Seconds before the next look after each look that found no cost (the first look is
# at delivery); past the last, the bill is unknown.
LOOK_DELAYS_S: tuple[float, ...] = (15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
PAGE_MIN_JOBS = 3  # a model with fewer due jobs is asked by id: pages cost more then
MAX_PAGES_PER_MODEL = 3
MIN_PAGE_SIZE = 100
# The provider's clock against the worker's: a row enqueued this long before the job's
# send is still looked for, so a skewed clock cannot end paging too early.
WINDOW_SLACK_S = 300.0
UNCHARGED_STATUSES = frozenset({"failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class DueJob:
    """A job whose bill is to be asked for."""

    job_id: str
    run_id: str
    model: str
    generation_ids: tuple[str, ...]  # its generation, then the killed stuck one if any
    sent_at: float | None  # when the job's enqueue was sent (worker clock)
    looks: int = 0  # looks so far that found no cost
    by_id: bool = False  # the history pages did not show it: ask by id
    # Charges learned by an earlier pass that ran out of turns before the job's other
    # generation: never asked for again, so a job of two always gets its bill.
    known: dict[str, float] = field(default_factory=dict)

    @property
    def generation_id(self) -> str:
        return self.generation_ids[0]


@dataclass(frozen=True, slots=True)
class Plan:
    """Which jobs to find in history pages (by model), and which to ask for by id."""

    paged: dict[str, list[DueJob]]
    by_id: list[DueJob]


def plan(jobs: Iterable[DueJob]) -> Plan:
    """Pages for a model with :data:`PAGE_MIN_JOBS` or more plain due jobs; by id for
    the rest, and always for a job with a stuck generation or one the pages missed."""
    groups: dict[str, list[DueJob]] = defaultdict(list)
    direct: list[DueJob] = []
    for job in jobs:
        if job.by_id or len(job.generation_ids) > 1:
            direct.append(job)
        else:
            groups[job.model].append(job)
    paged: dict[str, list[DueJob]] = {}
    for model, group in groups.items():
        if len(group) >= PAGE_MIN_JOBS:
            paged[model] = group
        else:
            direct.extend(group)
    return Plan(paged, direct)


def page_size_for(jobs: int) -> int:
    """Room for the jobs and as many rows of other work between them, within limits."""
    return min(MAX_PAGE_SIZE, max(MIN_PAGE_SIZE, 2 * jobs))


def window_start(jobs: Iterable[DueJob]) -> float | None:
    """Rows enqueued before this cannot be these jobs'; None: a send time is unknown."""
    times = [job.sent_at for job in jobs]
    if not times or any(t is None for t in times):
        return None
    return min(t for t in times if t is not None) - WINDOW_SLACK_S


def row_charge(status: str, cost: float | None) -> float | None:
    """What one generation was charged; None when not known yet."""
    if cost is not None:
        return cost
    if status in UNCHARGED_STATUSES:
        return 0.0
    return None


def job_bill(charges: Iterable[float | None]) -> float | None:
    """The job's bill, the sum over its generations; None until each is known."""
    total = 0.0
    for charge in charges:
        if charge is None:
            return None
        total += charge
    return round(total, 6)


def next_look_s(looks: int) -> float | None:
    """Seconds until the next look after ``looks`` looks without a cost; None: give up."""
    if looks < 1:
        return 0.0
    if looks > len(LOOK_DELAYS_S):
        return None
    return LOOK_DELAYS_S[looks - 1]
