"""Prometheus metrics of a worker: observed around provider calls and limiter waits,
served over HTTP. The gauges read from Redis are the exporter's (tests/test_gauges.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from provider.errors import ServerError
from worker.metrics import start_metrics_server
from worker.throttle import Throttle
from worker.throttled_calls import reported, wait_turn


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def scrape() -> Iterator[Any]:
    server = start_metrics_server(0, addr="127.0.0.1")
    port = server.server_address[1]

    def get() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    yield get
    server.shutdown()


def test_scrape_after_a_few_steps(client: fakeredis.FakeRedis, scrape: Any) -> None:
    before = scrape()
    throttle = Throttle.from_spec(client, "submit", "1/min")
    assert wait_turn(throttle) == 0.0
    assert wait_turn(throttle) > 1  # the second turn of a 1/min budget waits
    reported(throttle, lambda: "generation")  # a lambda: labelled by its throttle

    def list() -> str:  # named like the client method it stands for
        return "listed"

    reported(Throttle.from_spec(client, "poll", "100/s"), list)
    with pytest.raises(ServerError):
        reported(throttle, lambda: (_ for _ in ()).throw(ServerError("boom")))

    after = scrape()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return float(after.get(key, 0.0) - before.get(key, 0.0))

    calls = "seedq_provider_call_seconds_count"
    assert delta(calls, endpoint="enqueue", outcome="ok") == 1
    assert delta(calls, endpoint="enqueue", outcome="error") == 1
    assert delta(calls, endpoint="list", outcome="ok") == 1
    assert delta("seedq_limiter_waits_total", limiter="submit") == 1
    assert delta("seedq_limiter_wait_seconds_count", limiter="submit") == 1
    # The gauges read from Redis are the exporter's alone (seedq/gauges.py).
    assert {name for name, _ in after if not name.startswith(IN_PROCESS_NAMES)} == set()


IN_PROCESS_NAMES = ("seedq_provider_call_seconds", "seedq_limiter_wait")
