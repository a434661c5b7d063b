"""When the ticker sweeps: each interval the poll interval moved at random by up to half
of it (a pure function, its randomness passed in), the sweep made when it is due rather
than at the next one-second tick or beat, and never more list calls than the interval
says, however many worker processes tick."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import redis

from seedq.contract import JobState
from seedq.store import JobStore
from tests.worker.test_admission import FakeProvider, Listing, advance, make_run, runtime
from tests.worker.test_heartbeat import Sent
from worker import ticker
from worker.runtime import Runtime
from worker.ticker import (
    SWEEP_JITTER,
    next_sweep_at,
    run_ticker,
    sweep_interval_s,
    sweep_is_due,
)


@pytest.fixture
def store(client: redis.Redis) -> JobStore:
    return JobStore(client)


@pytest.mark.parametrize(
    ("rand", "interval_s"), [(0.0, 7.5), (0.25, 11.25), (0.5, 15.0), (0.75, 18.75)]
)
def test_a_sweep_interval_is_the_poll_interval_moved_by_up_to_half(
    rand: float, interval_s: float
) -> None:
    assert sweep_interval_s(15.0, rand=rand) == pytest.approx(interval_s)


def test_sweep_intervals_average_the_poll_interval() -> None:
    """As many list calls per unit of time as the poll interval says, never two sweeps
    closer than half an interval."""
    draws = [sweep_interval_s(0.5, rand=i / 1000) for i in range(1000)]
    assert sum(draws) / len(draws) == pytest.approx(0.5, rel=1e-3)
    assert min(draws) == pytest.approx(0.5 * (1 - SWEEP_JITTER))
    assert max(draws) < 0.5 * (1 + SWEEP_JITTER)


@pytest.mark.parametrize(
    ("due_at", "now", "next_at"),
    [
        (100.0, 100.05, 110.0),  # on time: an interval after it was due
        (100.0, 103.0, 110.0),  # late: the sweeps after it keep their pace
        (100.0, 108.0, 113.0),  # very late: half an interval from now, no burst
        (0.0, 50.0, 60.0),  # never noted: from now
        (500.0, 50.0, 60.0),  # due further off than any interval (a clock set back)
    ],
)
def test_the_next_sweep_is_due_an_interval_after_this_one_was(
    due_at: float, now: float, next_at: float
) -> None:
    assert next_sweep_at(due_at, now, 10.0) == pytest.approx(next_at)


@pytest.mark.parametrize(
    ("due_at", "due"),
    [(0.0, True), (49.0, True), (50.0, True), (60.0, False), (65.0, False), (65.1, True)],
)
def test_a_sweep_is_due_when_its_time_came_or_lies_beyond_any_interval(
    due_at: float, due: bool
) -> None:
    assert sweep_is_due(due_at, 50.0, 10.0) is due  # intervals of 5 to 15 s


@dataclass
class TimedProvider(FakeProvider):
    """Notes when each list call (each sweep) was made."""

    at: list[float] = field(default_factory=list)

    def list(self, **filters: Any) -> Listing:
        self.at.append(time.monotonic())
        return super().list(**filters)


def gaps(at: list[float]) -> list[float]:
    return [b - a for a, b in pairwise(at)]


def sweeping(store: JobStore, tmp_path: Path, poll_interval_s: float) -> tuple[Runtime, Any]:
    """A runtime with one generation running, so that every sweep makes its list call."""
    provider = TimedProvider(active={"g-1"})
    rt = runtime(store, tmp_path, provider, lease_s=60)
    rt.settings = rt.settings.model_copy(update={"poll_interval_s": poll_interval_s})
    make_run(store, "run", ["j1"])
    rt.admission.admit()
    advance(store, "j1", "run", JobState.SUBMITTING)
    advance(store, "j1", "run", JobState.SUBMITTED, generation_id="g-1")
    return rt, provider


def run_tickers(rt: Runtime, seconds: float, processes: int = 1) -> None:
    """Run ``processes`` tickers (as many worker processes would) against ``rt``."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=run_ticker, args=(lambda: rt, Sent(), stop), daemon=True)
        for _ in range(processes)
    ]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(5)


def test_a_sweep_comes_when_it_is_due_not_at_the_next_tick(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll interval of 1.3 s sweeps every 1.3 s, not at the one-second ticks (which
    swept every second: more list calls than the interval says, each a little early)."""
    monkeypatch.setattr(ticker, "random", lambda: 0.5)  # no jitter: the interval itself
    rt, provider = sweeping(store, tmp_path, 1.3)
    run_tickers(rt, 4.3)
    assert len(provider.at) == 3, gaps(provider.at)  # at 1 s (the first tick), 2.3 s, 3.6 s
    assert 2.55 < provider.at[-1] - provider.at[0] < 2.9, gaps(provider.at)


def test_the_sweep_keeps_its_drawn_interval_between_ticks(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every draw at its lowest: 0.2 s between sweeps at a 0.4 s interval, not a beat of
    0.4 s; with two processes ticking, still one sweep per interval."""
    monkeypatch.setattr(ticker, "random", lambda: 0.0)
    rt, provider = sweeping(store, tmp_path, 0.4)
    run_tickers(rt, 3.1, processes=2)
    between = gaps(provider.at)
    assert 8 <= len(between) <= 11, between  # about ten in the 2 s after the first tick
    assert min(between) > 0.09, between  # one late (a tick ran long) brings one early
