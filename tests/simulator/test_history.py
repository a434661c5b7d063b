"""``GET /api/ai/generations`` and ``GET /api/ai/generations/{id}`` over real HTTP, on an
account that starts with a history (``SimConfig.history``): pages newest first, every
status unless filtered, a cost per charged row, the filter's totals, and the documented
limits of ``page`` and ``page_size``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from seedq.modelinfo import estimate_cost, load_shipped_model, rate_per_second
from simulator.history import FAILED_EVERY
from simulator.server import SimHandle

MODEL = "bytedance-seedance-2-0-image-to-video"
MakeSim = Callable[..., SimHandle]
WaitFor = Callable[[httpx.Client, str], dict[str, Any]]
PAST = 250


@pytest.fixture
def account(make_sim: MakeSim) -> httpx.Client:
    sim = make_sim(history=PAST, fast=True)
    client = httpx.Client(base_url=sim.url, headers={"Authorization": "Bearer k"}, timeout=10)
    return client


def test_history_pages_newest_first_with_totals(account: httpx.Client) -> None:
    first = account.get("/api/ai/generations", params={"page_size": 100}).json()
    assert (first["page_number"], first["page_size"]) == (1, 100)
    assert (first["total_entries"], first["total_pages"]) == (PAST, 3)
    rows = first["generations"]
    assert len(rows) == 100
    times = [r["enqueued_at"] for r in rows]
    assert times == sorted(times, reverse=True)
    last = account.get("/api/ai/generations", params={"page_size": 100, "page": 3}).json()
    assert len(last["generations"]) == PAST - 200
    assert last["generations"][-1]["prompt"] == "past generation 0"  # the oldest, last
    beyond = account.get("/api/ai/generations", params={"page_size": 100, "page": 4}).json()
    assert beyond["generations"] == []


def test_rows_carry_their_cost_and_the_totals_add_up(account: httpx.Client) -> None:
    body = account.get("/api/ai/generations", params={"page_size": 1000}).json()
    failed = [r for r in body["generations"] if r["status"] == "failed"]
    succeeded = [r for r in body["generations"] if r["status"] == "succeeded"]
    assert len(failed) == PAST // FAILED_EVERY and len(succeeded) > PAST * 0.9
    assert all(r["cost"] is None for r in body["generations"] if r["status"] != "succeeded")
    for row in succeeded:
        pricing = load_shipped_model(row["model_name"]).pricing
        rate = rate_per_second(pricing, resolution=row["resolution"], generate_audio=False)
        assert float(row["cost"]) == pytest.approx(rate * row["duration"])
    total = sum(float(r["cost"]) for r in succeeded)
    assert float(body["total_cost"]) == pytest.approx(total)
    assert all(r["username"] and r["user_id"] for r in body["generations"])


@pytest.mark.parametrize(
    "query",
    [
        {"status": "failed"},
        {"status": "succeeded"},
        {"status": "queued"},
        {"model": MODEL},
        {"model": MODEL, "status": "succeeded"},
        {"model": "another-model"},
        {"media_type": "video"},
        {"media_type": "image"},
    ],
)
def test_history_filters(account: httpx.Client, query: dict[str, str]) -> None:
    everything = account.get("/api/ai/generations", params={"page_size": 1000}).json()
    fields = {"status": "status", "model": "model_name", "media_type": "media_type"}
    expected = [
        r
        for r in everything["generations"]
        if all(r[fields[name]] == value for name, value in query.items())
    ]
    body = account.get("/api/ai/generations", params=query).json()
    assert body["total_entries"] == len(expected)
    ids = [r["generation_id"] for r in body["generations"]]
    assert ids == [r["generation_id"] for r in expected[:50]]  # default page, same order
    charged = [float(r["cost"]) for r in expected if r["cost"] is not None]
    assert (
        body["total_cost"] is None
        if not charged
        else float(body["total_cost"]) == (pytest.approx(sum(charged)))
    )


@pytest.mark.parametrize(
    "query",
    [
        {"page_size": "1001"},
        {"page_size": "0"},
        {"page": "0"},
        {"page": "x"},
        {"status": "done"},
    ],
)
def test_history_refuses_what_the_document_does_not_allow(
    account: httpx.Client, query: dict[str, str]
) -> None:
    response = account.get("/api/ai/generations", params=query)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_params"


def test_a_new_generation_is_charged_and_first_in_the_history(
    make_sim: MakeSim, params: dict[str, Any], wait_for: WaitFor
) -> None:
    sim = make_sim(history=PAST, fast=True)
    with httpx.Client(base_url=sim.url, headers={"Authorization": "Bearer k"}) as c:
        gid = c.post("/api/ai/queue", json=params).json()["generations"][0]["generation_id"]
        newest = c.get("/api/ai/generations", params={"page_size": 1}).json()["generations"]
        assert newest[0]["generation_id"] == gid
        assert wait_for(c, gid)["status"] == "succeeded"
        billed = c.get(f"/api/ai/generations/{gid}").json()
        assert (billed["status"], billed["status_message"]) == ("success", "resource_found")
        price = estimate_cost(
            load_shipped_model(MODEL).pricing, seconds=4, resolution="480p", generate_audio=False
        )
        assert float(billed["generation"]["cost"]) == pytest.approx(price)
        assert billed["generation"]["generation_id"] == gid
        assert c.get("/api/ai/generations/no-such-id").status_code == 404
    assert sim.stats()["generations"] == 1  # the history is not counted as created
