"""Reading a long account history: when to stop paging ``GET /api/ai/generations``.

A real account holds hundreds of thousands of generations, so nothing reads the whole
history. The pages come newest first by enqueue time, so once a page holds a row
enqueued before the window a reader cares about (a send's start, a run's creation),
every later page is older still: the reader stops there. A reconcile then reads a page
or two however long the history; an audit reads what was enqueued since its run began.

Rows are ordered by enqueue time, which never changes, so a row cannot move to an
earlier page while a reader pages: new rows only push older ones to later pages, where
the reader sees them again (the same id twice, deduplicated), never skips them.

The decisions are pure; :func:`history_since` is the one walk, with its client passed
in (``worker.auditor``, ``seedq retry``). The submit step pages by itself, one page per
turn of the poll budget, resumable (``worker.submitting``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from provider.models import BilledGeneration, Generation, GenerationPage
from provider.protocol import MAX_PAGE_SIZE, Pages
from worker.reconcile import SKEW_S

# A walk reads the largest pages: the fewest calls for a window that spans many rows.
PAGE_SIZE = MAX_PAGE_SIZE


def window_start(started_at: float) -> float:
    """The oldest enqueue time a row of interest may carry: ``started_at`` less the
    clock skew the matching allows (:func:`worker.reconcile.matches`)."""
    return started_at - SKEW_S


def reached_older(rows: Sequence[Generation], *, since: float) -> bool:
    """Whether ``rows`` (newest first) reach back before ``since``: a row enqueued
    earlier is there, so no later page can hold a row of the window. Rows without an
    enqueue time prove nothing either way."""
    return any(g.enqueued_at is not None and g.enqueued_at < since for g in rows)


def read_on(page: GenerationPage, *, since: float) -> bool:
    """Whether the page after ``page`` must be read too."""
    return not page.is_last and not reached_older(page.generations, since=since)


def history_since(
    provider: Pages, *, model: str, status: str | None, since: float
) -> Iterator[BilledGeneration]:
    """The model's generations (of ``status``, or every one) from the newest back to the
    first page that reaches before ``since``: never the whole history."""
    page = 1
    while True:
        got = provider.history(page=page, page_size=PAGE_SIZE, model=model, status=status)
        yield from got.generations
        if not read_on(got, since=since):
            return
        page += 1
