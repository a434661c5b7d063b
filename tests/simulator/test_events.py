"""``GET /api/events``: framing, keep-alive, unrelated events, no buffering, no event on cancel."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from simulator.server import SimHandle

MakeSim = Callable[..., SimHandle]
HEADERS = {"Authorization": "Bearer k"}


def _frames(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(kind, value) per SSE block: ("comment", text) or (event name, data)."""
    name, data = "message", ""
    for line in lines:
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif line == "" and data:
            yield name, data
            name, data = "message", ""


def _enqueue(sim: SimHandle, params: dict[str, Any], **changes: Any) -> str:
    body = httpx.post(f"{sim.url}/api/ai/queue", json={**params, **changes}, headers=HEADERS).json()
    gen_id: str = body["generations"][0]["generation_id"]
    return gen_id


def _wait_done(sim: SimHandle, gen_id: str) -> dict[str, Any]:
    for _ in range(1000):
        body: dict[str, Any] = httpx.get(f"{sim.url}/api/ai/queue/{gen_id}", headers=HEADERS).json()
        if body["status"] not in ("queued", "processing"):
            return body
        time.sleep(0.02)
    raise AssertionError("not finished")


def _next_completion(frames: Iterator[tuple[str, str]]) -> dict[str, Any]:
    for name, data in frames:
        if name == "media_generation_completed":
            event: dict[str, Any] = json.loads(data)
            return event
    raise AssertionError("stream ended")


def test_completion_events_and_no_buffering(make_sim: MakeSim, params: dict[str, Any]) -> None:
    sim = make_sim(fast=True)
    lost = _enqueue(sim, params, prompt="nobody listens")
    _wait_done(sim, lost)
    with httpx.stream("GET", f"{sim.url}/api/events", headers=HEADERS, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = _frames(response.iter_lines())
        ok = _enqueue(sim, params, prompt="heard")
        event = _next_completion(frames)
        assert event == {
            "generation_id": ok,
            "status": "succeeded",
            "media_type": "video",
            "model": params["model"],
            "url": event["url"],
        }
        assert httpx.get(event["url"]).status_code == 200
        bad = _enqueue(sim, params, duration=2)
        failed = _next_completion(frames)
        assert set(failed) == {"generation_id", "status", "media_type", "error"}
        assert failed["generation_id"] == bad and failed["status"] == "failed"
        assert "duration" in failed["error"]
    assert sim.stats()["events_sent"]["media_generation_completed"] == 2


def test_raw_framing(make_sim: MakeSim, params: dict[str, Any]) -> None:
    sim = make_sim(fast=True)
    with httpx.stream("GET", f"{sim.url}/api/events", headers=HEADERS, timeout=10) as response:
        gen_id = _enqueue(sim, params)
        raw = b""
        for chunk in response.iter_raw():
            raw += chunk
            if raw.endswith(b"\n\n"):
                break
    head, data_line, rest = raw.decode().split("\n", 2)
    assert head == "event: media_generation_completed"
    assert data_line.startswith("data: {") and json.loads(data_line[6:])["generation_id"] == gen_id
    assert rest == "\n"


def test_keepalive_and_unrelated_events(make_sim: MakeSim) -> None:
    sim = make_sim(keepalive_s=0.05, unrelated_event_rate=1.0)
    with httpx.stream("GET", f"{sim.url}/api/events", headers=HEADERS, timeout=10) as response:
        frames = _frames(response.iter_lines())
        seen = [next(frames) for _ in range(4)]
    assert seen[0] == ("comment", "keep-alive")
    assert seen[1][0] == "repo_updated" and json.loads(seen[1][1])
    assert [kind for kind, _ in seen] == ["comment", "repo_updated", "comment", "repo_updated"]


def test_plain_keepalive_without_noise(make_sim: MakeSim) -> None:
    sim = make_sim(keepalive_s=0.05, unrelated_event_rate=0.0)
    with httpx.stream("GET", f"{sim.url}/api/events", headers=HEADERS, timeout=10) as response:
        raw = b""
        for chunk in response.iter_raw():
            raw += chunk
            if raw.count(b"\n\n") >= 2:
                break
    assert raw.startswith(b": keep-alive\n\n: keep-alive\n\n")


def test_no_event_on_cancel(make_sim: MakeSim, params: dict[str, Any]) -> None:
    sim = make_sim(fast=True, latency_s=(30.0, 30.0), max_concurrency=1, keepalive_s=0.05)
    with httpx.stream("GET", f"{sim.url}/api/events", headers=HEADERS, timeout=10) as response:
        frames = _frames(response.iter_lines())
        running, waiting = _enqueue(sim, params), _enqueue(sim, params, prompt="b")
        httpx.delete(f"{sim.url}/api/ai/queue/{waiting}", headers=HEADERS)
        httpx.delete(f"{sim.url}/api/ai/queue/{running}", headers=HEADERS)
        # Several keep-alives go by and nothing else arrives.
        seen = [next(frames) for _ in range(5)]
    assert {kind for kind, _ in seen} == {"comment"}
    assert sim.stats()["events_sent"] == {}
