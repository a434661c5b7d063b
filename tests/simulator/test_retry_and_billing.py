"""Kill-and-retry, stuck generations, what a generation is charged, and the account's
history, on the running simulator over HTTP."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from simulator.server import SimHandle
from tests.simulator.conftest import KEY, MODEL, MakeSim, wait_finished


def api(sim: SimHandle) -> httpx.Client:
    return httpx.Client(base_url=sim.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10)


def enqueue(client: httpx.Client, params: dict[str, Any], **changes: Any) -> str:
    response = client.post("/api/ai/queue", json={**params, **changes})
    assert response.status_code == 200, response.text
    return str(response.json()["generations"][0]["generation_id"])


def processing(client: httpx.Client, gen_id: str) -> None:
    deadline = time.monotonic() + 10
    while client.get(f"/api/ai/queue/{gen_id}").json()["status"] != "processing":
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_stuck_generation_is_killed_and_retried(
    make_sim: MakeSim, params: dict[str, Any]
) -> None:
    sim = make_sim(fast=True, stuck_rate=1.0)
    with api(sim) as client:
        stuck = enqueue(client, params)
        processing(client, stuck)
        fresh = client.post(f"/api/ai/queue/{stuck}/retry").json()
        assert fresh["retried_from_id"] == stuck and fresh["status"] == "queued"
        done = wait_finished(client, fresh["generation_id"])  # retries are not stuck
        assert done["status"] == "succeeded" and done["retried_from_id"] == stuck
        assert client.get(f"/api/ai/queue/{stuck}").json()["status"] == "cancelled"
        refused = client.post(f"/api/ai/queue/{fresh['generation_id']}/retry")
        assert refused.status_code == 409 and refused.json()["error"]["type"] == "invalid_params"
        unknown = client.post("/api/ai/queue/00000000-0000-4000-8000-000000000000/retry")
        assert unknown.status_code == 404
    stats = sim.stats()
    assert (stats["enqueued"], stats["retried"], stats["generations"]) == (1, 1, 2)
    assert stats["duplicate_enqueues"] == 0
    assert stats["requests"]["POST /api/ai/queue/{generation_id}/retry"] == 3


def test_a_retry_can_get_stuck_too(make_sim: MakeSim, params: dict[str, Any]) -> None:
    sim = make_sim(fast=True, stuck_rate=1.0, stuck_retry_rate=1.0)
    with api(sim) as client:
        stuck = enqueue(client, params)
        processing(client, stuck)
        again = client.post(f"/api/ai/queue/{stuck}/retry").json()["generation_id"]
        processing(client, again)
        time.sleep(0.3)  # well past the latency: stuck, not slow
        assert client.get(f"/api/ai/queue/{again}").json()["status"] == "processing"
        client.delete(f"/api/ai/queue/{again}")
        assert client.get(f"/api/ai/queue/{again}").json()["status"] == "cancelled"


def test_a_failed_generation_can_be_retried(make_sim: MakeSim, params: dict[str, Any]) -> None:
    sim = make_sim(fast=True, failure_rate=1.0)
    with api(sim) as client:
        failed = enqueue(client, params)
        assert wait_finished(client, failed)["status"] == "failed"
        fresh = client.post(f"/api/ai/queue/{failed}/retry")
        assert fresh.status_code == 200 and fresh.json()["retried_from_id"] == failed
        assert client.get(f"/api/ai/queue/{failed}").json()["status"] == "failed"


@pytest.mark.parametrize("factor", [1.0, 1.37])
def test_a_generation_is_charged_at_the_served_price(
    make_sim: MakeSim, params: dict[str, Any], factor: float
) -> None:
    sim = make_sim(fast=True, price_factor=factor)
    with api(sim) as client:
        model = client.get(f"/api/ai/models/{MODEL}").json()
        per_second = model["pricing"]["cost_per_second_by_resolution"]["480p"]
        assert per_second == pytest.approx(0.096 * factor)
        gen_ids = [enqueue(client, params, prompt=f"clip {i}", duration=4 + i) for i in range(3)]
        for gen_id in gen_ids:
            assert wait_finished(client, gen_id)["status"] == "succeeded"
        costs = [
            float(client.get(f"/api/ai/generations/{g}").json()["generation"]["cost"])
            for g in gen_ids
        ]
        assert costs == pytest.approx([per_second * s for s in (4, 5, 6)])
        page = client.get("/api/ai/generations", params={"status": "succeeded"}).json()
        assert float(page["total_cost"]) == pytest.approx(sum(costs))


def test_cost_is_null_until_a_generation_succeeds(
    make_sim: MakeSim, params: dict[str, Any]
) -> None:
    sim = make_sim(fast=True, latency_s=(30.0, 30.0))
    with api(sim) as client:
        gen_id = enqueue(client, params)
        processing(client, gen_id)
        row = client.get(f"/api/ai/generations/{gen_id}").json()["generation"]
        assert row["cost"] is None
        client.delete(f"/api/ai/queue/{gen_id}")
        row = client.get(f"/api/ai/generations/{gen_id}").json()["generation"]
        assert row["status"] == "cancelled" and row["cost"] is None


def test_history_is_listed_but_never_counted_as_work(make_sim: MakeSim) -> None:
    sim = make_sim(fast=True, history=500)
    with api(sim) as client:
        assert client.get("/api/ai/queue").json()["count"] == 0  # nothing active
        everything = client.get("/api/ai/generations", params={"page_size": 1000}).json()
        assert everything["total_entries"] == everything["count"] == 500
        stamps = [g["enqueued_at"] for g in everything["generations"]]
        assert stamps == sorted(stamps, reverse=True) and stamps[0] < time.time()
        for row in everything["generations"]:  # every one of them over and done
            assert row["enqueued_at"] < row["started_at"] < row["completed_at"] <= time.time()
        statuses = {g["status"] for g in everything["generations"]}
        assert statuses == {"succeeded", "failed", "cancelled"}
        assert len({g["model_name"] for g in everything["generations"]}) > 1
        charged = [float(g["cost"]) for g in everything["generations"] if g["cost"]]
        assert float(everything["total_cost"]) == pytest.approx(sum(charged))
    stats = sim.stats()
    assert (stats["enqueued"], stats["generations"], stats["history"]) == (0, 0, 500)
    assert sum(stats["by_status"].values()) == 0


@pytest.mark.parametrize(
    ("patch", "per_second"),
    [
        ({"pricing": {"cost_per_second_by_resolution": {"480p": 0.5}}}, 0.5),
        ({"pricing": None}, 0.096 * 2),  # unusable: a change of the document only
        ({"request_schema": None}, 0.096 * 2),
    ],
)
def test_billing_follows_the_served_prices_when_they_can_be_read(
    make_sim: MakeSim, params: dict[str, Any], patch: dict[str, Any], per_second: float
) -> None:
    sim = make_sim(fast=True, price_factor=2.0, model_patch=patch)
    with api(sim) as client:
        gen_id = enqueue(client, params)
        assert wait_finished(client, gen_id)["status"] == "succeeded"
        cost = client.get(f"/api/ai/generations/{gen_id}").json()["generation"]["cost"]
        assert float(cost) == pytest.approx(per_second * params["duration"])
