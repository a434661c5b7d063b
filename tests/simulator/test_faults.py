"""Fault injection: each kind, the pure chooser, determinism under a seed, /_sim untouched."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from simulator.config import SimConfig
from simulator.faults import Fault, choose_fault
from simulator.server import SimHandle

MakeSim = Callable[..., SimHandle]
HEADERS = {"Authorization": "Bearer k"}


@pytest.mark.parametrize(
    ("rates", "draw", "expected"),
    [
        ({}, 0.0, None),
        ({"error_rate": 0.25}, 0.1, Fault.SERVER_ERROR),
        ({"error_rate": 0.25}, 0.3, None),
        ({"error_rate": 0.25, "rate_limit_rate": 0.25}, 0.3, Fault.RATE_LIMITED),
        ({"error_rate": 0.25, "drop_rate": 0.5}, 0.74, Fault.DROP),
        ({"drop_after_rate": 1.0}, 0.999, Fault.DROP_AFTER),
    ],
)
def test_choose_fault(rates: dict[str, float], draw: float, expected: Fault | None) -> None:
    assert choose_fault(SimConfig(**rates), draw) is expected


def test_server_errors(make_sim: MakeSim) -> None:
    sim = make_sim(error_rate=1.0)
    response = httpx.get(f"{sim.url}/api/ai/queue", headers=HEADERS)
    assert response.status_code in (500, 502, 503)
    assert response.json()["error"]["type"] == "unknown_error"
    assert httpx.get(f"{sim.url}/_sim/stats").status_code == 200  # /_sim is never faulted
    assert sim.stats()["faults"]["server_error"] == 1


def test_echo_auth_quotes_the_authorization_header(make_sim: MakeSim) -> None:
    sim = make_sim(error_rate=0.5, rate_limit_rate=0.5, echo_auth=True, seed=1)
    bodies = {httpx.get(f"{sim.url}/api/ai/queue", headers=HEADERS).text for _ in range(8)}
    assert all(HEADERS["Authorization"] in body for body in bodies)


def test_rate_limited_with_retry_after(make_sim: MakeSim) -> None:
    sim = make_sim(rate_limit_rate=1.0, retry_after_s=7)
    response = httpx.post(f"{sim.url}/api/ai/queue", headers=HEADERS, json={})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"


def test_slow_answer_times_out_the_client(make_sim: MakeSim) -> None:
    sim = make_sim(slow_rate=1.0, slow_delay_s=1.0)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{sim.url}/api/ai/queue", headers=HEADERS, timeout=0.2)


def test_dropped_connection(make_sim: MakeSim, params: dict[str, Any]) -> None:
    sim = make_sim(drop_rate=1.0)
    # The peer closing mid-exchange reads as either, depending on timing.
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.post(f"{sim.url}/api/ai/queue", headers=HEADERS, json=params)
    sim.configure(drop_rate=0.0)
    assert sim.stats()["enqueued"] == 0  # dropped before it was handled


def test_drop_after_handling_loses_the_answer_not_the_effect(
    make_sim: MakeSim, params: dict[str, Any]
) -> None:
    sim = make_sim(drop_after_rate=1.0, latency_s=(30.0, 30.0))
    # The peer closing mid-exchange reads as either, depending on timing.
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.post(f"{sim.url}/api/ai/queue", headers=HEADERS, json=params)
    sim.configure(drop_after_rate=0.0)
    listed = httpx.get(
        f"{sim.url}/api/ai/queue", headers=HEADERS, params={"model": params["model"]}
    ).json()
    assert listed["count"] == 1 and listed["generations"][0]["input_image"] == params["input_image"]


def test_failed_generations(make_sim: MakeSim, params: dict[str, Any]) -> None:
    sim = make_sim(failure_rate=1.0, fast=True)
    gen_id = httpx.post(f"{sim.url}/api/ai/queue", headers=HEADERS, json=params).json()[
        "generations"
    ][0]["generation_id"]
    for _ in range(500):
        body = httpx.get(f"{sim.url}/api/ai/queue/{gen_id}", headers=HEADERS).json()
        if body["status"] == "failed":
            break
        time.sleep(0.02)
    assert body["status"] == "failed" and body["error_message"]


def test_runtime_config_endpoint(make_sim: MakeSim) -> None:
    sim = make_sim()
    updated = httpx.post(f"{sim.url}/_sim/config", json={"error_rate": 1.0}).json()
    assert updated["error_rate"] == 1.0 and updated["seed"] == 7
    assert httpx.get(f"{sim.url}/_sim/config").json()["error_rate"] == 1.0
    assert httpx.get(f"{sim.url}/api/ai/queue", headers=HEADERS).status_code >= 500
    refused = httpx.post(f"{sim.url}/_sim/config", json={"error_rate": 2})
    assert refused.status_code == 400 and "error_rate" in refused.json()["error"]["message"]
    assert httpx.post(f"{sim.url}/_sim/config", json={"nope": 1}).status_code == 400


def test_same_seed_same_faults(make_sim: MakeSim) -> None:
    def sequence(sim: SimHandle) -> list[int]:
        return [
            httpx.get(f"{sim.url}/api/ai/queue", headers=HEADERS).status_code for _ in range(30)
        ]

    first = sequence(make_sim(seed=3, error_rate=0.3, rate_limit_rate=0.3))
    second = sequence(make_sim(seed=3, error_rate=0.3, rate_limit_rate=0.3))
    assert first == second and 200 in first and 429 in first
