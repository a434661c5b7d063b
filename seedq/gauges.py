"""The gauges ``seedq exporter`` serves, read from Redis at each scrape.

One reader (:class:`QueueCollector`) over one store read (``JobStore.queue_snapshot``:
counters, queue lengths and one job per waiting queue, never a scan of the jobs), plus
the two throttles' state, which the command line passes in (the throttles are the
worker layer's). The workers serve only what they observe in their own process
(``worker/metrics.py``); the backlog is served here, by a process that needs no worker,
so that an autoscaler can start workers from zero.

A scrape that cannot reach Redis serves ``seedq_up 0`` and nothing else: a gauge that
was not read is absent, never a stale or made-up value.

The metric names are a contract: ``deploy/grafana``, ``deploy/prometheus`` and the
Kubernetes autoscaling (KEDA) query them. ``tests/test_deploy.py`` checks that every
``seedq_`` name they use is one served here or by the workers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from seedq.contract import ADMITTING, JobState
from seedq.queueing import connection_error
from seedq.records import QueueSnapshot, WaitingRun
from seedq.store import JobStore

log = logging.getLogger(__name__)
RECENT_RUNS = 1000  # the per-run gauges cover this many most recent runs
QUEUES = ("submit", "track", "deliver")  # the worker Deployments, by the queue they consume

HELP = {
    "seedq_up": "1 when Redis answered this scrape; 0 when it did not (then no other "
    "seedq_ gauge is served).",
    "seedq_backlog_jobs": "Jobs registered and not yet admitted (waiting for an in-flight "
    "slot), in the runs that may admit (active or registering). Paused and scheduled "
    "runs' waiting jobs are not counted.",
    "seedq_backlog_jobs_by_run": "seedq_backlog_jobs, by run.",
    "seedq_in_flight_jobs": "Jobs holding an in-flight slot: admitted and not yet "
    "generated, failed or cancelled (at most SEEDQ_MAX_IN_FLIGHT).",
    "seedq_jobs": f"Jobs by state, per run, over the {RECENT_RUNS} most recent runs (the "
    "runs' own counters).",
    "seedq_spend_usd": "Money a run has spent in the pricing's currency (USD): generated "
    "jobs at their estimate, then at the clip's real cost, then at the provider's bill.",
    "seedq_reserved_usd": "Money a run has reserved for its admitted jobs not yet "
    "generated (their estimates), in the pricing's currency (USD).",
    "seedq_budget_usd": "A run's budget (--budget), where it has one, in the pricing's "
    "currency (USD).",
    "seedq_throttle_rate_per_s": "Calls a second a global throttle lets through now: its "
    "adaptive rate, halved on 429s and won back on successes (no call goes while "
    "seedq_breaker_open is 1 or a Retry-After holds).",
    "seedq_throttle_configured_rate_per_s": "A throttle's configured rate "
    "(SEEDQ_SUBMIT_RATE, SEEDQ_POLL_RATE as the exporter is given them).",
    "seedq_breaker_open": "1 while a throttle's circuit breaker is not closed (open, or "
    "half-open with one probe call let through), else 0.",
    "seedq_oldest_waiting_job_age_seconds": "How long the next job to be admitted has "
    "waited: over the runs that may admit, the job at the head of each queue (highest "
    "priority, then first in), since it last changed state; the oldest of those. 0 when "
    "nothing waits.",
    "seedq_queue_demand_jobs": "The work each worker queue has, for autoscaling: submit = "
    "the backlog plus admitted jobs registered or submitting; track = jobs submitted or "
    "retrying (generating at the provider); deliver = jobs generated (awaiting delivery).",
}


@dataclass(frozen=True, slots=True)
class ThrottleGauge:
    """One global throttle's state (``worker.throttle.Throttle.state``)."""

    name: str  # submit | poll
    effective_rate_per_s: float
    configured_rate_per_s: float
    breaker: str  # closed | open | half_open


ThrottleStates = Callable[[], Sequence[ThrottleGauge]]


def breaker_open(breaker: str) -> bool:
    """Half-open counts as open: a provider that stays down cycles open, half-open (one
    probe), open, and an alert on ``open for 5 min`` must not be reset by each probe."""
    return breaker != "closed"


def backlog(snapshot: QueueSnapshot) -> list[WaitingRun]:
    """The runs whose waiting jobs are the backlog: those whose status admits."""
    return [run for run in snapshot.offered if run.status in ADMITTING and run.waiting > 0]


def oldest_waiting_age_s(snapshot: QueueSnapshot, now: float) -> float:
    """See ``HELP``; 0 when nothing waits (or no head could be read)."""
    since = [run.head_since for run in backlog(snapshot) if run.head_since is not None]
    return max(0.0, now - min(since)) if since else 0.0


def queue_demand(snapshot: QueueSnapshot) -> dict[str, int]:
    """The jobs each queue's workers have to work on (see ``HELP``). A registered job
    that is not waiting holds a slot: admitted, its submit message due."""
    total = dict.fromkeys(JobState, 0)
    admitted = 0
    for run in snapshot.runs:
        for state in JobState:
            total[state] += run.counts.get(state, 0)
        admitted += max(0, run.counts.get(JobState.REGISTERED, 0) - run.waiting)
    waiting = sum(run.waiting for run in backlog(snapshot))
    return {
        "submit": waiting + admitted + total[JobState.SUBMITTING],
        "track": total[JobState.SUBMITTED] + total[JobState.RETRYING],
        "deliver": total[JobState.GENERATED],
    }


def families(
    snapshot: QueueSnapshot, throttles: Sequence[ThrottleGauge], now: float
) -> Iterator[GaugeMetricFamily]:
    """Every gauge but ``seedq_up``, from one read."""
    waiting = backlog(snapshot)
    yield _gauge("seedq_backlog_jobs", value=sum(run.waiting for run in waiting))
    by_run = _gauge("seedq_backlog_jobs_by_run", labels=["run_id", "run_name"])
    for queue_of in waiting:
        by_run.add_metric([queue_of.run_id, queue_of.name], queue_of.waiting)
    yield by_run
    yield _gauge("seedq_in_flight_jobs", value=snapshot.in_flight)
    jobs = _gauge("seedq_jobs", labels=["run_id", "state"])
    spend = _gauge("seedq_spend_usd", labels=["run_id"])
    reserved = _gauge("seedq_reserved_usd", labels=["run_id"])
    budget = _gauge("seedq_budget_usd", labels=["run_id"])
    for run in snapshot.runs:
        # Every state, zeros included: a rate or delta over a run's series needs the
        # series from its start (no "delivered" yet is 0, not absent).
        for state in JobState:
            jobs.add_metric([run.run_id, state.value], run.counts.get(state, 0))
        spend.add_metric([run.run_id], run.spent)
        reserved.add_metric([run.run_id], run.reserved)
        if run.cap is not None:
            budget.add_metric([run.run_id], run.cap)
    yield from (jobs, spend, reserved, budget)
    rate = _gauge("seedq_throttle_rate_per_s", labels=["throttle"])
    configured = _gauge("seedq_throttle_configured_rate_per_s", labels=["throttle"])
    breaker = _gauge("seedq_breaker_open", labels=["throttle"])
    for throttle in throttles:
        rate.add_metric([throttle.name], throttle.effective_rate_per_s)
        configured.add_metric([throttle.name], throttle.configured_rate_per_s)
        breaker.add_metric([throttle.name], float(breaker_open(throttle.breaker)))
    yield from (rate, configured, breaker)
    yield _gauge("seedq_oldest_waiting_job_age_seconds", value=oldest_waiting_age_s(snapshot, now))
    demand = _gauge("seedq_queue_demand_jobs", labels=["queue"])
    for queue, n in queue_demand(snapshot).items():
        demand.add_metric([queue], n)
    yield demand


def _gauge(
    name: str, *, value: float | None = None, labels: Sequence[str] | None = None
) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, HELP[name], value=value, labels=labels)


class QueueCollector(Collector):
    """The gauges, read from Redis on each scrape (``seedq_up 0`` when it cannot be)."""

    def __init__(
        self,
        store: JobStore,
        throttles: ThrottleStates,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._throttles = throttles
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            snapshot = self._store.queue_snapshot(RECENT_RUNS)
            throttles = self._throttles()
        except Exception as exc:
            said = connection_error(exc)
            if said is None:
                raise  # a bug: prometheus_client answers the scrape with a 500
            log.warning("scrape: %s", said)
            yield _gauge("seedq_up", value=0)
            return
        yield _gauge("seedq_up", value=1)
        yield from families(snapshot, throttles, self._clock())


def exporter_registry(collector: QueueCollector) -> CollectorRegistry:
    """A registry of the exporter's gauges only (no process or platform metrics)."""
    registry = CollectorRegistry()
    registry.register(collector)
    return registry
