"""The tolerant response models and their parsing entry points."""

from __future__ import annotations

from typing import Any

import pytest

from provider import errors as e
from provider.models import (
    CompletionEvent,
    EnqueueResponse,
    Generation,
    GenerationList,
    parse_json,
    parse_model,
)

GEN: dict[str, Any] = {
    "generation_id": "g-1",
    "model_name": "bytedance-seedance-2-0-image-to-video",
    "prompt": "a cat walks",
    "media_type": "video",
    "status": "succeeded",
    "result_url": "https://files.example/g-1.mp4?sig=x",
    "error_message": None,
    "enqueued_at": 1700000000,
    "started_at": 1700000001.5,
    "completed_at": None,
    "input_image": "https://img.example/cat.png",
    "duration": 5,
    "aspect_ratio": "16:9",
    "seed": 42,
    "namespace": "ox",
}


def test_generation_parses_documented_fields_and_echoed_params() -> None:
    gen = parse_model(Generation, GEN)
    assert gen.status == "succeeded" and gen.is_terminal and gen.is_known_status
    assert gen.enqueued_at == 1700000000.0 and gen.completed_at is None
    assert gen.params() == {
        "prompt": "a cat walks",
        "input_image": "https://img.example/cat.png",
        "duration": 5,
        "aspect_ratio": "16:9",
        "seed": 42,
        "namespace": "ox",
    }


@pytest.mark.parametrize(
    ("status", "terminal", "known"),
    [
        ("queued", False, True),
        ("processing", False, True),
        ("succeeded", True, True),
        ("failed", True, True),
        ("cancelled", True, True),
        ("paused", False, False),
        ("", False, False),
    ],
)
def test_generation_status_tolerates_unknown(status: str, terminal: bool, known: bool) -> None:
    gen = parse_model(Generation, {**GEN, "status": status})
    assert gen.status == status
    assert (gen.is_terminal, gen.is_known_status) == (terminal, known)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1700000000, 1700000000.0),
        ("1700000000.5", 1700000000.5),
        ("2023-11-14T22:13:20Z", 1700000000.0),
        ("2023-11-14T22:13:20+00:00", 1700000000.0),
        ("yesterday", None),
        (True, None),
        ([1], None),
        (None, None),
    ],
)
def test_timestamps_degrade_to_none(value: object, expected: float | None) -> None:
    assert parse_model(Generation, {**GEN, "started_at": value}).started_at == expected


def test_generation_aliases() -> None:
    gen = parse_model(Generation, {"id": "g-2", "model": "m", "status": "queued"})
    assert (gen.generation_id, gen.model_name, gen.prompt) == ("g-2", "m", None)
    assert gen.params() == {}


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"status": "queued"},
        {"generation_id": None, "status": "queued"},
        {"generation_id": "g", "status": 3},
        {"generation_id": "g", "status": "queued", "prompt": ["x"]},
        [],
        "text",
        None,
    ],
)
def test_bad_generation_is_malformed_response(data: object) -> None:
    with pytest.raises(e.MalformedResponse):
        parse_model(Generation, data)


def test_generation_list_count_defaults_to_length() -> None:
    listed = parse_model(GenerationList, {"generations": [GEN, {**GEN, "generation_id": "g-2"}]})
    assert listed.count == 2 and [g.generation_id for g in listed.generations] == ["g-1", "g-2"]
    assert parse_model(GenerationList, {"count": 7, "generations": []}).count == 7
    assert parse_model(GenerationList, {}).count == 0


def test_enqueue_response_needs_at_least_one_generation() -> None:
    ok = parse_model(EnqueueResponse, {"generations": [{"generation_id": "g", "status": "queued"}]})
    assert ok.generations[0].generation_id == "g"
    with pytest.raises(e.MalformedResponse):
        parse_model(EnqueueResponse, {"generations": []})


def test_completion_event() -> None:
    ev = parse_model(
        CompletionEvent,
        {"generation_id": "g", "status": "failed", "media_type": "video", "error": "blocked"},
    )
    assert (ev.status, ev.error, ev.url) == ("failed", "blocked", None)


@pytest.mark.parametrize("body", [b"", b"<html></html>", b"{", b"null", b"\xff\xfe"])
def test_parse_json_rejects_non_json(body: bytes) -> None:
    with pytest.raises(e.MalformedResponse):
        parse_json(body)
