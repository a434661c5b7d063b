"""The exporter's gauges (seedq/gauges.py) over fakeredis: each metric's value for a
made-up store state, the throttles' state as the workers leave it, a Redis that does
not answer, and a read whose cost does not grow with the jobs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import cli.exporter
from cli.exporter import exporter_store, throttle_states
from seedq import keys
from seedq.gauges import (
    QueueCollector,
    ThrottleGauge,
    breaker_open,
    exporter_registry,
)
from seedq.records import waiting_score
from seedq.settings import load_settings
from seedq.store import JobStore
from worker.call_results import CallResult
from worker.runtime import poll_throttle, submit_throttle

NOW = 1_800_000_000.0
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
THROTTLES = [
    ThrottleGauge(
        "submit", effective_rate_per_s=1.0, configured_rate_per_s=2.0, breaker="half_open"
    ),
    ThrottleGauge("poll", effective_rate_per_s=20.0, configured_rate_per_s=20.0, breaker="closed"),
]


def scrape(collector: QueueCollector) -> Samples:
    text = generate_latest(exporter_registry(collector)).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def add_run(
    client: fakeredis.FakeRedis,
    run_id: str,
    *,
    name: str,
    status: str,
    counts: dict[str, int],
    waiting_since: list[float] = (),  # type: ignore[assignment]
    budget: dict[str, float] | None = None,
) -> None:
    """A run as the store leaves it: its hash, counters, waiting queue (each job's
    ``updated_at``, head first), admission's entry and budget."""
    created = NOW - 3600 + len(client.zrange(keys.RUNS, 0, -1))
    client.hset(keys.run(run_id), mapping={"name": name, "status": status, "created_at": created})
    client.zadd(keys.RUNS, {run_id: created})
    client.hset(keys.run_counts(run_id), mapping=counts)  # type: ignore[arg-type]
    for n, since in enumerate(waiting_since):
        job_id = f"{run_id}-w{n}"
        client.zadd(keys.run_waiting(run_id), {job_id: waiting_score(0, n + 1)})
        client.hset(keys.job(job_id), mapping={"state": "registered", "updated_at": since})
    if waiting_since:
        client.zadd(keys.ADMISSION_RUNS, {run_id: 0})
    if budget:
        client.hset(keys.run_budget(run_id), mapping=budget)  # type: ignore[arg-type]


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def night(client: fakeredis.FakeRedis) -> fakeredis.FakeRedis:
    """Three runs: one active (3 waiting, 2 admitted and not yet sent, the rest at every
    step), one paused with 4 waiting, one still registering with 2 waiting."""
    counts = {"registered": 5, "submitting": 1, "submitted": 4, "retrying": 1}
    counts |= {"generated": 2, "delivered": 10, "failed": 1}
    add_run(
        client,
        "r-night",
        name="night",
        status="active",
        counts=counts,
        waiting_since=[NOW - 120, NOW - 60, NOW - 60],
        budget={"cap": 20.0, "spent": 9.5, "reserved": 1.5},
    )
    add_run(
        client,
        "r-held",
        name="held",
        status="paused",
        counts={"registered": 4},
        waiting_since=[NOW - 1000] * 4,
        budget={"spent": 0.0},
    )
    add_run(
        client,
        "r-day",
        name="day",
        status="registering",
        counts={"registered": 2},
        waiting_since=[NOW - 30, NOW - 5],
    )
    client.zadd(keys.IN_FLIGHT, {f"slot-{n}": NOW + 300 for n in range(8)})
    return client


def collector(client: fakeredis.FakeRedis, throttles: Any = THROTTLES) -> QueueCollector:
    return QueueCollector(JobStore(client), lambda: throttles, clock=lambda: NOW)


def test_each_gauge_for_a_night_of_three_runs(night: fakeredis.FakeRedis) -> None:
    got = scrape(collector(night))
    assert got[("seedq_up", ())] == 1
    # Waiting in the runs that admit: the paused run's 4 are held, not backlog.
    assert got[("seedq_backlog_jobs", ())] == 5
    by_run = {k[1]: v for k, v in got.items() if k[0] == "seedq_backlog_jobs_by_run"}
    assert by_run == {
        (("run_id", "r-night"), ("run_name", "night")): 3,
        (("run_id", "r-day"), ("run_name", "day")): 2,
    }
    assert got[("seedq_in_flight_jobs", ())] == 8
    assert got[("seedq_jobs", (("run_id", "r-night"), ("state", "delivered")))] == 10
    assert got[("seedq_jobs", (("run_id", "r-held"), ("state", "registered")))] == 4
    # Every state is served, zeros included, so a delta over a run's series works
    # from its start.
    assert got[("seedq_jobs", (("run_id", "r-day"), ("state", "delivered")))] == 0
    assert len([k for k in got if k[0] == "seedq_jobs"]) == 3 * 8
    assert got[("seedq_spend_usd", (("run_id", "r-night"),))] == 9.5
    assert got[("seedq_reserved_usd", (("run_id", "r-night"),))] == 1.5
    assert got[("seedq_spend_usd", (("run_id", "r-day"),))] == 0
    budgets = {k[1]: v for k, v in got.items() if k[0] == "seedq_budget_usd"}
    assert budgets == {(("run_id", "r-night"),): 20.0}  # the only run with a cap
    # The paused run's head waited longer, but is not waiting for a slot.
    assert got[("seedq_oldest_waiting_job_age_seconds", ())] == 120
    demand = {k[1][0][1]: v for k, v in got.items() if k[0] == "seedq_queue_demand_jobs"}
    # submit: 5 waiting + 2 admitted not yet sent + 1 submitting; track: 4 submitted + 1
    # retrying; deliver: 2 generated.
    assert demand == {"submit": 8, "track": 5, "deliver": 2}
    assert got[("seedq_throttle_rate_per_s", (("throttle", "submit"),))] == 1.0
    assert got[("seedq_throttle_configured_rate_per_s", (("throttle", "submit"),))] == 2.0
    assert got[("seedq_breaker_open", (("throttle", "submit"),))] == 1  # half-open counts
    assert got[("seedq_breaker_open", (("throttle", "poll"),))] == 0


def test_an_empty_store_reads_as_nothing_to_do(client: fakeredis.FakeRedis) -> None:
    got = scrape(collector(client))
    assert got[("seedq_up", ())] == 1
    assert got[("seedq_backlog_jobs", ())] == 0
    assert got[("seedq_in_flight_jobs", ())] == 0
    assert got[("seedq_oldest_waiting_job_age_seconds", ())] == 0
    for queue in ("submit", "track", "deliver"):
        assert got[("seedq_queue_demand_jobs", (("queue", queue),))] == 0


def test_a_run_registered_through_the_store_is_backlog(client: fakeredis.FakeRedis) -> None:
    """The layout the test above makes up is the one the store writes."""
    store = JobStore(client)
    store.create_run("r-real", "real", {})
    jobs = [(f"j{n}", f"fp{n}", {"priority": 0, "est_cost": 0.5}) for n in range(4)]
    for _ in store.register("r-real", jobs):
        pass
    store.set_run_status("r-real", "active")
    got = scrape(QueueCollector(store, lambda: THROTTLES))
    assert got[("seedq_backlog_jobs", ())] == 4
    assert got[("seedq_queue_demand_jobs", (("queue", "submit"),))] == 4
    assert got[("seedq_jobs", (("run_id", "r-real"), ("state", "registered")))] == 4
    assert 0 <= got[("seedq_oldest_waiting_job_age_seconds", ())] < 60


@pytest.mark.parametrize(
    ("breaker", "is_open"), [("closed", False), ("open", True), ("half_open", True)]
)
def test_breaker_open_while_not_closed(breaker: str, is_open: bool) -> None:
    assert breaker_open(breaker) is is_open


def test_throttle_state_as_the_workers_leave_it(client: fakeredis.FakeRedis) -> None:
    settings = load_settings(submit_rate="4/s", poll_rate="10/s", breaker_threshold=2)
    store = JobStore(client)
    submit, poll = submit_throttle(store, settings), poll_throttle(store, settings)
    submit.report(CallResult.RATE_LIMITED)  # halves the submit rate
    for _ in range(2):
        poll.report(CallResult.FAILURE)  # opens the poll breaker
    got = scrape(QueueCollector(store, throttle_states(store, settings)))
    assert got[("seedq_throttle_rate_per_s", (("throttle", "submit"),))] == 2.0
    assert got[("seedq_throttle_configured_rate_per_s", (("throttle", "submit"),))] == 4.0
    assert got[("seedq_throttle_rate_per_s", (("throttle", "poll"),))] == 10.0
    assert got[("seedq_breaker_open", (("throttle", "submit"),))] == 0
    assert got[("seedq_breaker_open", (("throttle", "poll"),))] == 1


def test_redis_down_at_scrape_time_serves_up_0_and_nothing_else() -> None:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    server.connected = False
    got = scrape(collector(client))
    assert got == {("seedq_up", ()): 0}


def test_a_bug_is_not_taken_for_an_outage(client: fakeredis.FakeRedis) -> None:
    def broken() -> list[ThrottleGauge]:
        raise KeyError("effective_rate_per_s")

    with pytest.raises(KeyError):
        scrape(QueueCollector(JobStore(client), broken))


@pytest.fixture
def hung_redis() -> Iterator[str]:
    """The URL of a server that accepts connections and never answers: a hung Redis.
    The kernel completes each handshake from the listen backlog; closing the listener
    at the end resets them, which ends a client still waiting."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


def test_a_hung_redis_answers_the_scrape_with_up_0_within_the_timeout(
    hung_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.exporter, "REDIS_TIMEOUT_S", 0.3)
    settings = load_settings(redis_url=hung_redis)
    store = exporter_store(settings)
    got: list[Samples] = []
    started = time.monotonic()
    scraping = threading.Thread(
        target=lambda: got.append(scrape(QueueCollector(store, throttle_states(store, settings)))),
        daemon=True,
    )
    scraping.start()
    scraping.join(timeout=10)
    assert not scraping.is_alive(), "the scrape hangs on a Redis that never answers"
    assert got == [{("seedq_up", ()): 0}]
    assert time.monotonic() - started < 3  # the exporter's timeout, not redis-py's default


def test_the_exporters_redis_timeout_fits_a_default_scrape_timeout() -> None:
    assert 0 < cli.exporter.REDIS_TIMEOUT_S < 10  # Prometheus's scrape_timeout: 10 s


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every round trip to Redis: a pipeline's execute, or a single command."""
    import redis.client

    seen: list[str] = []
    execute: Any = redis.client.Pipeline.execute
    command: Any = redis.client.Redis.execute_command

    def counted_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append("pipeline")
        return execute(self, *args, **kwargs)

    def counted_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(args[0]))
        return command(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", counted_execute)
    monkeypatch.setattr(redis.client.Redis, "execute_command", counted_command)
    yield seen


@pytest.mark.parametrize("jobs", [10, 2000])
def test_the_read_costs_three_round_trips_however_many_jobs(
    client: fakeredis.FakeRedis, round_trips: list[str], jobs: int
) -> None:
    add_run(
        client,
        "r-big",
        name="big",
        status="active",
        counts={"registered": jobs},
        waiting_since=[NOW - 10] * jobs,
    )
    round_trips.clear()
    snapshot = JobStore(client).queue_snapshot(1000)
    assert round_trips == ["pipeline"] * 3
    assert snapshot.offered[0].waiting == jobs
