"""The store's indexes answer exactly what a scan of every generation would: each page
and total of ``GET /api/ai/generations`` and each status list of ``GET /api/ai/queue``,
for every filter combination, before and after generations change status."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from simulator.history import past_generations
from simulator.state import (
    ACTIVE,
    CANCELLED,
    FAILED,
    PROCESSING,
    QUEUED,
    STATUSES,
    SUCCEEDED,
    Generation,
    Store,
    Target,
    matches,
)

MODELS = ("model-a", "model-b")
TARGETS = (Target(), Target("team", "team/clips", "out"), Target("team", "team/other", None))
FILTER_VALUES: dict[str, tuple[str, ...]] = {
    "model": (*MODELS, "bytedance-seedance-2-0-image-to-video", "nobody"),
    "status": tuple(sorted(STATUSES)),
    "media_type": ("video", "image"),
    "namespace": ("team", "nobody"),
    "repo": ("team/clips",),
    "folder": ("out",),
}


def filter_sets() -> list[dict[str, str]]:
    """Every filter alone with each of its values, and every pair of filters."""
    sets: list[dict[str, str]] = [{}]
    for size in (1, 2):
        for names in itertools.combinations(FILTER_VALUES, size):
            for values in itertools.product(*(FILTER_VALUES[n] for n in names)):
                sets.append(dict(zip(names, values, strict=True)))
    return sets


def scan_page(store: Store, filters: dict[str, str], page: int, size: int) -> dict[str, Any]:
    """What a page is by definition: every matching row, newest first, sliced."""
    picked = [g for g in reversed(store.generations.values()) if matches(g, filters)]
    costs = [g.cost for g in picked if g.status == SUCCEEDED and g.cost is not None]
    return {
        "ids": [g.generation_id for g in picked[(page - 1) * size : page * size]],
        "total": len(picked),
        "cost": pytest.approx(sum(costs)) if costs else None,
    }


def indexed_page(store: Store, filters: dict[str, str], page: int, size: int) -> dict[str, Any]:
    found = store.page(filters, page, size)
    return {
        "ids": [g.generation_id for g in found.rows],
        "total": found.total_entries,
        "cost": found.total_cost,
    }


@pytest.fixture
def store() -> Store:
    """A history, then live generations in every state over two models and targets."""
    rng = random.Random(3)
    store = Store()
    for past in past_generations(60, now=1_800_000_000, rng=rng, price_factor=1.0):
        store.add_past(past)
    for n in range(45):
        gen = Generation(
            generation_id=f"live-{n}",
            model=MODELS[n % 2],
            params={"prompt": f"clip {n}"},
            seq=n,
            enqueued_at=1_800_000_000 + n,
            target=TARGETS[n % 3],
        )
        store.add(gen)
        if n % 6 == 0:
            continue  # stays queued
        store.set_status(gen, PROCESSING)
        outcome = (QUEUED, PROCESSING, SUCCEEDED, SUCCEEDED, FAILED, CANCELLED)[n % 6]
        if outcome == SUCCEEDED:
            gen.cost = 0.5 + n / 100
        if outcome != PROCESSING:
            store.set_status(gen, outcome)
    return store


def check_everything(store: Store) -> None:
    for filters in filter_sets():
        for page, size in ((1, 1000), (1, 7), (2, 7), (6, 7), (40, 7)):
            assert indexed_page(store, filters, page, size) == scan_page(
                store, filters, page, size
            ), (filters, page, size)
        if "status" in filters:
            expected = [g.generation_id for g in store.generations.values() if matches(g, filters)]
        else:
            expected = [
                g.generation_id
                for g in store.generations.values()
                if g.status in ACTIVE and matches(g, filters)
            ]
        assert [g.generation_id for g in store.listed(filters)] == expected, filters


def test_pages_totals_and_lists_are_those_of_a_scan(store: Store) -> None:
    check_everything(store)


def test_they_stay_so_as_generations_change(store: Store) -> None:
    active = [g for g in store.generations.values() if g.status in ACTIVE]
    assert {g.status for g in active} == {QUEUED, PROCESSING}
    for n, gen in enumerate(active):
        if gen.status == QUEUED:
            store.set_status(gen, PROCESSING)
        gen.cost = 1.0
        store.set_status(gen, (SUCCEEDED, FAILED, CANCELLED)[n % 3])
    assert store.active == {} and store.queued == {}
    check_everything(store)


def test_the_scheduler_reads_the_queued_index_in_enqueue_order(store: Store) -> None:
    queued = [g for g in store.generations.values() if g.status == QUEUED]
    processing = sum(g.status == PROCESSING for g in store.generations.values())
    assert store.processing_count() == processing
    for gen in queued:
        assert store.next_queued() is gen
        store.set_status(gen, PROCESSING)
    assert store.next_queued() is None
    assert store.processing_count() == processing + len(queued)


def test_stats_count_this_run_only(store: Store) -> None:
    stats = store.stats(subscribers=0)
    live = [g for g in store.generations.values() if not g.past]
    assert stats["history"] == 60 and stats["generations"] == len(live) == 45
    assert stats["by_status"] == {s: sum(g.status == s for g in live) for s in sorted(STATUSES)}
    assert (stats["queued"], stats["processing"]) == (
        stats["by_status"][QUEUED],
        stats["by_status"][PROCESSING],
    )
