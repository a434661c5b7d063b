"""Every response held to the field sets and values of the published OpenAPI
(``tests/data/oxen-ai-queue-openapi.json``) and docs/provider-api.md, as data: the
fields each row always carries, beyond what the schemas require (test_openapi.py holds
every answer to the schemas themselves)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from simulator.server import SimHandle

MakeSim = Callable[..., SimHandle]
HEADERS = {"Authorization": "Bearer k"}

STATUSES = {"queued", "processing", "succeeded", "failed", "cancelled"}
GENERATION_FIELDS = {
    "generation_id",
    "model_name",
    "prompt",
    "media_type",
    "status",
    "result_url",
    "error_message",
    "enqueued_at",
    "started_at",
    "completed_at",
    "target_namespace",
    "target_repo",
    "target_directory",
}
BILLED_FIELDS = GENERATION_FIELDS | {"cost", "user_id", "username", "user_image"}
PAGE_FIELDS = {
    "count",
    "generations",
    "page_number",
    "page_size",
    "total_pages",
    "total_entries",
    "total_cost",
}
SHOW_FIELDS = {"status", "status_message", "generation"}
SYNC_FIELDS = {"created", "model", "videos"}
ENQUEUE_ITEM_FIELDS = {"generation_id", "status"}
LIST_FIELDS = {"count", "generations"}
MODEL_FIELDS = {
    "id",
    "object",
    "created",
    "owned_by",
    "developer",
    "deployments",
    "display_name",
    "description",
    "model_type",
    "endpoint",
    "capabilities",
    "pricing",
    "summary",
    "fine_tuning",
    "showcase",
    "released_at",
    "source_model",
    "image_url",
}
PRICING_FIELDS = {
    "method",
    "cost_per_second_by_resolution",
    "cost_per_second",
    "cost_per_second_high_res",
    "cost_per_second_with_audio",
    "cost_per_image",
    "cost_per_image_grid",
    "input_cost_per_token",
    "output_cost_per_token",
}
SCHEMA_PROPERTY_KEYS = {"type", "default", "enum", "minimum", "maximum", "format", "description"}
TYPED_ERROR_FIELDS = {"error", "status", "status_message"}
TYPED_ERROR_INNER = {"type", "title", "detail"}
ERROR_TYPES = {"unauthenticated", "invalid_params", "resource_not_found", "unknown_error"}


def check_generation(body: dict[str, Any], submitted: dict[str, Any]) -> None:
    assert set(body) >= GENERATION_FIELDS
    assert body["status"] in STATUSES and body["media_type"] == "video"
    assert (body["result_url"] is not None) == (body["status"] == "succeeded")
    assert (body["error_message"] is not None) == (body["status"] == "failed")
    for stamp in ("enqueued_at", "started_at", "completed_at"):
        assert body[stamp] is None or isinstance(body[stamp], int)
    for name, value in submitted.items():
        if name != "model":
            assert body[name] == value


def check_billed(body: dict[str, Any], submitted: dict[str, Any]) -> None:
    assert set(body) >= BILLED_FIELDS
    check_generation(body, submitted)
    if body["status"] != "succeeded":
        assert body["cost"] is None
    elif body["cost"] is not None:
        assert float(body["cost"]) > 0 and "." in body["cost"]  # a decimal string
    assert body["username"] and body["user_id"]


def check_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status
    body = response.json()
    if set(body) == {"error"}:
        assert set(body["error"]) == {"message"}
        return
    assert set(body) == TYPED_ERROR_FIELDS and set(body["error"]) == TYPED_ERROR_INNER
    assert body["status"] == "error" and body["status_message"] == body["error"]["type"]
    assert body["error"]["type"] in ERROR_TYPES


def test_contract(make_sim: MakeSim, params: dict[str, Any]) -> None:
    sim = make_sim(fast=True, latency_s=(0.2, 0.2))
    api = httpx.Client(base_url=sim.url + "/api", headers=HEADERS, timeout=10)
    enqueued = api.post("/ai/queue", json=params)
    assert enqueued.status_code == 200 and set(enqueued.json()) == {"generations"}
    item = enqueued.json()["generations"][0]
    assert set(item) == ENQUEUE_ITEM_FIELDS and item["status"] == "queued"
    gen_id = item["generation_id"]
    check_generation(api.get(f"/ai/queue/{gen_id}").json(), params)
    listed = api.get("/ai/queue").json()
    assert set(listed) == LIST_FIELDS and listed["count"] == len(listed["generations"]) == 1
    check_generation(listed["generations"][0], params)
    synced = api.post("/ai/videos/generate", json=params)
    assert synced.status_code == 200 and set(synced.json()) >= SYNC_FIELDS
    check_generation(synced.json(), params)
    assert synced.json()["model"] == params["model"] and isinstance(synced.json()["created"], int)
    assert synced.json()["videos"] == [{"url": synced.json()["result_url"]}]
    page = api.get("/ai/generations").json()
    assert set(page) == PAGE_FIELDS and page["count"] == len(page["generations"]) == 2
    for row in page["generations"]:
        check_billed(row, params)
    assert (page["page_number"], page["page_size"], page["total_pages"]) == (1, 50, 1)
    charged = [float(row["cost"]) for row in page["generations"] if row["cost"] is not None]
    assert page["generations"][0]["cost"] is not None  # the synced one, newest
    assert float(page["total_cost"]) == pytest.approx(sum(charged))
    shown = api.get(f"/ai/generations/{gen_id}").json()
    assert set(shown) == SHOW_FIELDS and shown["status_message"] == "resource_found"
    check_billed(shown["generation"], params)
    cancelled = api.delete(f"/ai/queue/{gen_id}").json()
    assert cancelled == {"status": "success", "generation_id": gen_id}
    check_generation(api.get(f"/ai/queue/{gen_id}").json(), params)
    done = api.get("/ai/queue", params={"status": "succeeded"}).json()
    for gen in done["generations"]:
        check_generation(gen, params)
    model = api.get(f"/ai/models/{params['model']}").json()
    assert set(model) >= MODEL_FIELDS and "request_schema" in model
    assert set(model["capabilities"]) == {"input", "output"} and model["object"] == "model"
    assert (
        set(model["pricing"]) >= PRICING_FIELDS
        and model["pricing"]["method"] == "per_video_output_second"
    )
    schema = model["request_schema"]
    assert set(schema["required"]) == {"prompt", "input_image"}
    for spec in schema["properties"].values():
        assert set(spec) <= SCHEMA_PROPERTY_KEYS
    check_error(api.get("/ai/queue/unknown"), 404)
    check_error(api.get("/ai/models/unknown"), 404)
    check_error(api.post("/ai/queue", json={**params, "num_generations": 13}), 400)
    check_error(api.post("/ai/videos/generate", json={**params, "aspect_ratio": "2:1"}), 400)
    check_error(httpx.get(sim.url + "/api/ai/queue"), 401)
    sim.configure(error_rate=1.0)
    response = api.get("/ai/queue")
    check_error(response, response.status_code)
    sim.configure(error_rate=0.0, rate_limit_rate=1.0)
    check_error(api.get("/ai/queue"), 429)
    sim.configure(rate_limit_rate=0.0, insufficient_credits=True)
    check_error(api.post("/ai/queue", json=params), 402)
    api.close()
