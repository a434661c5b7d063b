"""Provider calls under a throttle: taking a turn (:func:`wait_turn`) and making the
call while reporting how it went (:func:`reported`), to the limiter and the metrics.

Every provider call of the workers goes through these two, so the limiter hears of
every 429 and every failure, whichever step made the call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from worker.call_results import CallResult, result_of
from worker.metrics import observe_call, observe_wait
from worker.throttle import Throttle

T = TypeVar("T")
SHORT_WAIT_S = 1.0  # waits this short are slept through (holding a thread) rather than re-queued
# The endpoint label of a call made through a lambda, by throttle (metrics only).
ENDPOINTS = {"submit": "enqueue", "poll": "status"}


def wait_turn(throttle: Throttle) -> float:
    """Take a turn (reserving one within a second and sleeping until it): 0.0 when the
    call may go now, else the seconds to come back after (the caller re-queues itself).

    A reserved turn is this caller's alone, so threads waiting on one budget go in turn
    instead of all waking together and all but one re-queueing their task. A 429
    reported, or the breaker opened, while it slept holds it like any other caller."""
    grant = throttle.reserve(SHORT_WAIT_S)
    observe_wait(throttle.name, grant.wait_s)
    if not grant.granted:
        return grant.wait_s
    if grant.wait_s > 0:
        time.sleep(grant.wait_s)
        held = throttle.held_s()
        if held > 0:
            return held  # the reserved turn goes unused: a lost turn, never an extra call
    return 0.0


def reported(throttle: Throttle, call: Callable[[], T], endpoint: str = "") -> T:
    """Make one provider call and report how it went to the throttle (and its latency,
    by ``endpoint``, default the call's name, to the metrics)."""
    if not endpoint:
        name = getattr(call, "__name__", "")
        endpoint = name if name.isidentifier() else ENDPOINTS.get(throttle.name, throttle.name)
    started = time.perf_counter()
    try:
        result = call()
    except BaseException as exc:
        observe_call(endpoint, time.perf_counter() - started, ok=False)
        counted = result_of(exc)
        if counted is not None:
            throttle.report(counted, retry_after_s=getattr(exc, "retry_after_s", None))
        raise
    observe_call(endpoint, time.perf_counter() - started, ok=True)
    throttle.report(CallResult.OK)
    return result
