"""The provider endpoints over real HTTP: lifecycle, auth, 404s, lists, cancel, models."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from simulator.server import SimHandle

MODEL = "bytedance-seedance-2-0-image-to-video"
KEY = "test-key"
Enqueue = Callable[..., str]
MakeSim = Callable[..., SimHandle]
WaitFor = Callable[[httpx.Client, str], dict[str, Any]]


def test_lifecycle_succeeds_with_timestamps_and_echo(
    client: httpx.Client, enqueue: Enqueue, wait_for: WaitFor, params: dict[str, Any]
) -> None:
    before = int(time.time())
    gen_id = enqueue()
    body = wait_for(client, gen_id)
    assert body["status"] == "succeeded"
    assert body["error_message"] is None and body["result_url"]
    assert (
        before <= body["enqueued_at"] <= body["started_at"] <= body["completed_at"] <= time.time()
    )
    for name, value in params.items():
        if name != "model":
            assert body[name] == value
    assert body["model_name"] == MODEL and body["media_type"] == "video"


def test_queued_then_processing_under_cap(
    make_sim: MakeSim, params: dict[str, Any], wait_for: WaitFor
) -> None:
    sim = make_sim(max_concurrency=2, latency_s=(0.6, 0.6), fast=True)
    with httpx.Client(base_url=sim.url, headers={"Authorization": "Bearer k"}) as c:
        ids = [
            c.post("/api/ai/queue", json={**params, "prompt": f"p{i}"}).json()["generations"][0][
                "generation_id"
            ]
            for i in range(5)
        ]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            states = [c.get(f"/api/ai/queue/{i}").json()["status"] for i in ids]
            if "processing" in states:
                break
            time.sleep(0.01)
        # FIFO: the first two run, the rest wait queued.
        assert states == ["processing", "processing", "queued", "queued", "queued"]
        assert c.get(f"/api/ai/queue/{ids[3]}").json()["started_at"] is None
        assert all(wait_for(c, i)["status"] == "succeeded" for i in ids)
    stats = sim.stats()
    assert stats["max_concurrent"] == 2
    assert stats["max_active"] == 5  # all five were queued or processing at once


def test_num_generations_makes_several(client: httpx.Client, params: dict[str, Any]) -> None:
    body = client.post("/api/ai/queue", json={**params, "num_generations": 3}).json()
    assert len(body["generations"]) == 3
    assert {g["status"] for g in body["generations"]} == {"queued"}
    assert len({g["generation_id"] for g in body["generations"]}) == 3


@pytest.mark.parametrize(
    ("change", "status", "error_type"),
    [
        ({"num_generations": 0}, 400, "invalid_params"),
        ({"num_generations": 13}, 400, "invalid_params"),
        ({"num_generations": "2"}, 400, "invalid_params"),
        ({"model": None}, 400, "invalid_params"),
        ({"model": "no-such-model"}, 404, "resource_not_found"),
    ],
)
def test_enqueue_refusals(
    client: httpx.Client,
    params: dict[str, Any],
    change: dict[str, Any],
    status: int,
    error_type: str,
) -> None:
    response = client.post("/api/ai/queue", json={**params, **change})
    assert response.status_code == status
    assert response.json()["error"]["type"] == error_type
    assert response.json()["status_message"] == error_type


def test_enqueue_refuses_non_object_body(client: httpx.Client) -> None:
    assert client.post("/api/ai/queue", content=b"[1]").status_code == 400
    assert client.post("/api/ai/queue", content=b"{nope").status_code == 400


def test_bad_parameters_are_accepted_then_fail_at_run_time(
    client: httpx.Client, enqueue: Enqueue, wait_for: WaitFor
) -> None:
    gen_id = enqueue(duration=3, resolution="8k")
    body = wait_for(client, gen_id)
    assert body["status"] == "failed" and body["result_url"] is None
    assert "duration" in body["error_message"] and "resolution" in body["error_message"]


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("missing.png", "HTTP 404"),
        ("notimage.png", "not a readable"),
        ("huge.png", "larger than 30 MB"),
    ],
)
def test_unusable_input_image_fails(
    client: httpx.Client, enqueue: Enqueue, wait_for: WaitFor, images: str, image: str, message: str
) -> None:
    body = wait_for(client, enqueue(input_image=f"{images}/{image}"))
    assert body["status"] == "failed"
    assert "input_image" in body["error_message"] or "could not fetch" in body["error_message"]
    assert message in body["error_message"]


def test_content_filter_blocks_faces_unless_declared(
    client: httpx.Client, enqueue: Enqueue, wait_for: WaitFor, images: str
) -> None:
    face = f"{images}/face-portrait.png"
    blocked = wait_for(client, enqueue(input_image=face))
    assert blocked["status"] == "failed"
    assert "content filter" in blocked["error_message"] and "face" in blocked["error_message"]
    allowed = wait_for(client, enqueue(input_image=face, input_image_has_face=True))
    assert allowed["status"] == "succeeded"
    tail = wait_for(client, enqueue(tail_image_url=face))
    assert "tail_image_url" in tail["error_message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/ai/queue"),
        ("GET", "/api/ai/queue"),
        ("GET", "/api/ai/queue/x"),
        ("DELETE", "/api/ai/queue/x"),
        ("GET", "/api/events"),
        ("POST", "/api/ai/videos/generate"),
        ("GET", f"/api/ai/models/{MODEL}"),
    ],
)
def test_unauthenticated(make_sim: MakeSim, method: str, path: str) -> None:
    sim = make_sim(api_key=KEY)
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer wrong"},
    ):
        response = httpx.request(method, sim.url + path, headers=headers, json={})
        assert response.status_code == 401
        body = response.json()
        assert body["status"] == "error" and body["status_message"] == "unauthenticated"
        assert set(body["error"]) == {"type", "title", "detail"}
        assert body["error"]["type"] == "unauthenticated"


def test_configured_key_is_accepted(make_sim: MakeSim) -> None:
    sim = make_sim(api_key=KEY)
    ok = httpx.get(sim.url + "/api/ai/queue", headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/ai/queue/nope"),
        ("DELETE", "/api/ai/queue/nope"),
        ("GET", "/api/ai/models/nope"),
        ("GET", "/api/nothing"),
    ],
)
def test_not_found(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "resource_not_found"


def test_list_filters(
    client: httpx.Client, params: dict[str, Any], sim: SimHandle, wait_for: WaitFor
) -> None:
    sim.configure(latency_s=(30.0, 30.0), max_concurrency=1)
    a = client.post("/api/ai/queue", json={**params, "target_namespace": "team-a"}).json()[
        "generations"
    ][0]
    b = client.post(
        "/api/ai/queue", json={**params, "model": "bytedance-seedance-2-0-mini-image-to-video"}
    ).json()["generations"][0]
    listed = client.get("/api/ai/queue").json()
    assert listed["count"] == 2 and [g["generation_id"] for g in listed["generations"]] == [
        a["generation_id"],
        b["generation_id"],
    ]
    assert [
        g["generation_id"]
        for g in client.get("/api/ai/queue", params={"namespace": "team-a"}).json()["generations"]
    ] == [a["generation_id"]]
    mini = client.get(
        "/api/ai/queue", params={"model": "bytedance-seedance-2-0-mini-image-to-video"}
    ).json()
    assert [g["generation_id"] for g in mini["generations"]] == [b["generation_id"]]
    assert client.get("/api/ai/queue", params={"status": "queued"}).json()["count"] == 1
    assert client.get("/api/ai/queue", params={"media_type": "video"}).json()["count"] == 2
    assert client.get("/api/ai/queue", params={"media_type": "image"}).json()["count"] == 0
    assert client.get("/api/ai/queue", params={"repo": "x/y"}).json()["count"] == 0
    assert client.get("/api/ai/queue", params={"status": "bogus"}).status_code == 400
    # Finished generations leave the default (active) list but stay listable by status.
    client.delete(f"/api/ai/queue/{a['generation_id']}")
    client.delete(f"/api/ai/queue/{b['generation_id']}")
    assert client.get("/api/ai/queue").json()["count"] == 0
    assert client.get("/api/ai/queue", params={"status": "cancelled"}).json()["count"] == 2


def test_cancel_queued_processing_and_finished(
    client: httpx.Client, enqueue: Enqueue, sim: SimHandle, wait_for: WaitFor
) -> None:
    done = wait_for(client, enqueue())
    answer = client.delete(f"/api/ai/queue/{done['generation_id']}").json()
    assert answer == {"status": "success", "generation_id": done["generation_id"]}
    assert client.get(f"/api/ai/queue/{done['generation_id']}").json()["status"] == "succeeded"
    sim.configure(latency_s=(30.0, 30.0), max_concurrency=1)
    running, waiting = enqueue(prompt="a"), enqueue(prompt="b")
    deadline = time.monotonic() + 5
    while client.get(f"/api/ai/queue/{running}").json()["status"] != "processing":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for gen_id in (waiting, running):
        body = client.delete(f"/api/ai/queue/{gen_id}")
        assert body.status_code == 200
        assert body.json() == {"status": "success", "generation_id": gen_id}
        row = client.get(f"/api/ai/queue/{gen_id}").json()
        assert row["status"] == "cancelled" and row["completed_at"] is not None
    assert client.get(f"/api/ai/queue/{running}").json()["status"] == "cancelled"
    assert sim.stats()["processing"] == 0


@pytest.mark.parametrize("field", ["request_schema", "json_request_schema"])
def test_model_object(make_sim: MakeSim, field: str) -> None:
    sim = make_sim(schema_field=field)
    body = httpx.get(
        f"{sim.url}/api/ai/models/{MODEL}", headers={"Authorization": "Bearer k"}
    ).json()
    assert body["id"] == MODEL and body["endpoint"] == "/videos/generate"
    assert body["pricing"]["method"] == "per_video_output_second"
    assert "4k" in body[field]["properties"]["resolution"]["enum"]
    other = {"request_schema", "json_request_schema"} - {field}
    assert not other & set(body)


def test_sync_generate_validates_then_blocks(client: httpx.Client, params: dict[str, Any]) -> None:
    bad = client.post("/api/ai/videos/generate", json={**params, "duration": 99})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_params"
    assert "duration" in bad.json()["error"]["detail"]
    good = client.post("/api/ai/videos/generate", json=params)
    assert good.status_code == 200
    body = good.json()
    assert body["status"] == "succeeded" and body["result_url"]
    assert httpx.get(body["result_url"]).status_code == 200


def test_insufficient_credits(
    client: httpx.Client,
    enqueue: Enqueue,
    sim: SimHandle,
    params: dict[str, Any],
    wait_for: WaitFor,
) -> None:
    sim.configure(latency_s=(0.5, 0.5))
    in_flight = enqueue()
    sim.configure(insufficient_credits=True)
    refused = client.post("/api/ai/queue", json=params)
    assert refused.status_code == 402
    assert refused.json() == {"error": {"message": "Insufficient credits"}}
    body = wait_for(client, in_flight)
    assert body["status"] == "failed" and body["error_message"] == "Insufficient credits"


def test_stats_count_duplicates_and_requests(
    client: httpx.Client, enqueue: Enqueue, sim: SimHandle
) -> None:
    enqueue()
    enqueue()
    enqueue(prompt="another")
    client.get("/api/ai/queue")
    stats = sim.stats()
    assert stats["enqueued"] == 3 and stats["duplicate_enqueues"] == 1
    assert stats["requests"]["POST /api/ai/queue"] == 3
    assert stats["requests"]["GET /api/ai/queue"] == 1
    over_http = httpx.get(f"{sim.url}/_sim/stats").json()
    assert over_http["duplicate_enqueues"] == 1
    assert httpx.post(f"{sim.url}/_sim/reset").status_code == 200
    assert sim.stats()["enqueued"] == 0
