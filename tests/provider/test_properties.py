"""Property tests: whatever arrives, the classifiers and parsers answer with a provider
error or a valid model, never another exception."""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provider import errors as e
from provider.classify import (
    classify_generation_failure,
    classify_response,
    error_details,
    parse_retry_after,
)
from provider.client import OxenClient
from provider.models import (
    CompletionEvent,
    EnqueueResponse,
    Generation,
    GenerationList,
    parse_json,
    parse_model,
)
from seedq.modelinfo import ModelInfo, check_params, estimate_cost

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
# Objects shaped like the contract's, with any field replaced by anything.
field_names = st.sampled_from(
    [
        "generation_id",
        "status",
        "model_name",
        "prompt",
        "result_url",
        "error_message",
        "enqueued_at",
        "started_at",
        "completed_at",
        "generations",
        "count",
        "error",
        "type",
        "title",
        "detail",
        "message",
        "status_message",
        "url",
        "id",
    ]
)
contractish = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["queued", "succeeded", "error", "Insufficient credits", "unauthenticated"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(field_names, inner, max_size=6),
    max_leaves=25,
)
bodies = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | contractish.map(lambda v: json.dumps(v).encode())
)
headers = st.dictionaries(
    st.sampled_from(["Retry-After", "retry-after", "Content-Type", "X"]), st.text(max_size=40)
)


@settings(max_examples=400, deadline=None)
@given(status=st.integers(min_value=-5, max_value=1000), headers=headers, body=bodies)
def test_classify_response_total(status: int, headers: dict[str, str], body: bytes) -> None:
    found = classify_response(status, headers, body, now_s=0.0)
    assert found is None or isinstance(found, e.ProviderError)
    if found is not None:
        assert isinstance(str(found), str) and isinstance(repr(found), str)
        assert isinstance(found, e.TransientProviderError | e.PermanentJobError | e.RunFatalError)
    if found is None:
        assert 200 <= status < 300


@settings(max_examples=300, deadline=None)
@given(body=bodies)
def test_error_details_total(body: bytes) -> None:
    etype, message = error_details(body)
    assert etype is None or isinstance(etype, str)
    assert message is None or isinstance(message, str)


@given(value=st.none() | st.text(max_size=60), now=st.floats(0, 4e9))
def test_retry_after_total(value: str | None, now: float) -> None:
    found = parse_retry_after(value, now_s=now)
    assert found is None or found >= 0


@given(message=st.none() | st.text(max_size=80))
def test_generation_failure_total(message: str | None) -> None:
    assert isinstance(
        classify_generation_failure(message), e.GenerationFailed | e.InsufficientCredits
    )


@settings(max_examples=400, deadline=None)
@given(
    data=contractish,
    model=st.sampled_from([Generation, GenerationList, EnqueueResponse, CompletionEvent]),
)
def test_parsers_total(data: Any, model: type[Any]) -> None:
    try:
        parsed = parse_model(model, data)
    except e.MalformedResponse:
        return
    assert isinstance(parsed, model)


@settings(max_examples=300, deadline=None)
@given(body=bodies)
def test_parse_json_total(body: bytes) -> None:
    with contextlib.suppress(e.MalformedResponse):
        parse_json(body)


@settings(max_examples=200, deadline=None)
@given(status=st.integers(min_value=100, max_value=599), body=bodies, headers=headers)
def test_client_calls_total(status: int, body: bytes, headers: dict[str, str]) -> None:
    """Any answer to any API call is a model or a ProviderError."""
    safe_headers = {k: v for k, v in headers.items() if v.isascii() and v.isprintable()}
    transport = httpx.MockTransport(
        lambda r: httpx.Response(status, content=body, headers=safe_headers)
    )
    with OxenClient("https://hub.oxen.ai", "sk-prop-key-123", transport=transport) as client:
        for call in (
            lambda: client.get("g"),
            lambda: client.list(),
            lambda: client.enqueue("m", {}),
            lambda: client.cancel("g"),
            lambda: client.model("m"),
        ):
            with contextlib.suppress(e.ProviderError):
                call()


# --- every client method, on contract-shaped, wrong-typed and huge answers -------------

CALLS: dict[str, Callable[[OxenClient], object]] = {
    "get": lambda c: c.get("g"),
    "list": lambda c: c.list(status="queued"),
    "enqueue": lambda c: c.enqueue("m", {"prompt": "p"}),
    "cancel": lambda c: c.cancel("g"),
    "generate": lambda c: c.generate("m", {"prompt": "p"}),
    "model": lambda c: use_model(c.model("m")),
}
generation_shaped = st.fixed_dictionaries(
    {"generation_id": st.text(max_size=6), "status": st.sampled_from(["queued", "succeeded"])},
    optional={name: json_values for name in ["result_url", "enqueued_at", "model_name", "prompt"]},
)
param_specs = st.dictionaries(
    st.sampled_from(["type", "enum", "minimum", "maximum", "default", "minLength"]), json_values
)
schema_shaped = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=6),
        "request_schema": st.fixed_dictionaries(
            {
                "properties": st.dictionaries(
                    st.sampled_from(["prompt", "duration", "resolution", "input_image"]),
                    param_specs | json_values,
                )
                | json_values,
            },
            optional={"required": json_values},
        ),
    },
    optional={
        "pricing": st.dictionaries(
            st.sampled_from(["currency", "cost_per_second", "cost_per_second_high_res",
                             "cost_per_second_with_audio", "method"]),
            json_values,
        ),
    },
)  # fmt: skip
shaped_bodies = (
    generation_shaped.map(lambda v: json.dumps(v).encode())
    | st.lists(generation_shaped, max_size=3).map(
        lambda v: json.dumps({"generations": v, "count": len(v)}).encode()
    )
    | st.dictionaries(st.sampled_from(["generation", "model", "data"]), contractish).map(
        lambda v: json.dumps(v).encode()
    )
    | schema_shaped.map(lambda v: json.dumps(v).encode())
    | schema_shaped.map(lambda v: json.dumps({"model": v}).encode())
)


def use_model(info: ModelInfo) -> None:
    """What seedq does with a live model: read its schema, check values, price a clip."""
    for name in [*info.properties, "duration", "prompt"]:
        info.default_of(name)
    assert all(isinstance(r, str) for r in info.required)
    values: dict[str, Any] = {"prompt": "p", "duration": 5, "resolution": "720p", "x": None}
    check_params(info, values | {name: 5 for name in info.properties if name not in values})
    estimate_cost(info.pricing, seconds=5, resolution="1080p", generate_audio=True)


def client_answering(status: int, body: bytes, headers: dict[str, str]) -> OxenClient:
    safe = {k: v for k, v in headers.items() if v.isascii() and v.isprintable()}
    transport = httpx.MockTransport(lambda r: httpx.Response(status, content=body, headers=safe))
    return OxenClient("https://hub.oxen.ai", "sk-prop-key-123", transport=transport)


@settings(max_examples=150, deadline=None)
@given(
    call=st.sampled_from(sorted(CALLS)),
    status=st.sampled_from([200, 201, 202, 204, 400, 401, 404, 429, 500]),
    body=shaped_bodies | bodies,
)
def test_every_call_on_contract_shaped_answers(call: str, status: int, body: bytes) -> None:
    """Missing fields, wrong types, wrapped or not: a model (used as seedq uses it) or a
    ProviderError, never another exception."""
    with client_answering(status, body, {}) as client, contextlib.suppress(e.ProviderError):
        CALLS[call](client)


@settings(max_examples=150, deadline=None)
@given(body=schema_shaped, wrapped=st.booleans())
def test_model_call_on_schema_shaped_answers(body: dict[str, Any], wrapped: bool) -> None:
    """A model object whose schema or pricing has any part of the wrong type: a
    MalformedResponse, or a model seedq can validate and price with."""
    raw = json.dumps({"model": body} if wrapped else body).encode()
    with client_answering(200, raw, {}) as client, contextlib.suppress(e.ProviderError):
        CALLS["model"](client)


HUGE_BODIES = {
    "deep arrays": b"[" * 200_000 + b"]" * 200_000,
    "deep objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "unclosed nesting": b"[" * 500_000,
    "huge integer": b'{"generation_id": "g", "status": "queued", "enqueued_at": 1'
    + b"0" * 100_000
    + b"}",
    "huge string": b'{"generation_id": "' + b"g" * 5_000_000 + b'", "status": "queued"}',
    "huge list": json.dumps(
        {"generations": [{"generation_id": str(i), "status": "queued"} for i in range(50_000)]}
    ).encode(),
    "5 MB of junk": b"\xff\x00<html>" * 700_000,
    "float overflow": b'{"generation_id": "g", "status": "queued", "enqueued_at": 1e999999}',
}


@pytest.mark.parametrize("status", [200, 500])
@pytest.mark.parametrize("name", sorted(HUGE_BODIES))
def test_every_call_on_huge_bodies(name: str, status: int, tmp_path: Path) -> None:
    body = HUGE_BODIES[name]
    with client_answering(status, body, {}) as client:
        for call in CALLS.values():
            with contextlib.suppress(e.ProviderError):
                call(client)
        with contextlib.suppress(e.RunFatalError):
            assert all(isinstance(ev, CompletionEvent) for ev in events_of(status, body))
        with contextlib.suppress(e.ProviderError):
            client.download("https://f.example/x", tmp_path / "x.mp4", max_bytes=1_000_000)
        assert not (tmp_path / "x.mp4").exists() or status == 200


def events_of(status: int, body: bytes) -> list[CompletionEvent]:
    """The events ``OxenClient.events()`` yields from answers with this status and body,
    read until it has connected three times (it reconnects after anything but 401/402)."""
    stop = threading.Event()
    served = itertools.count(1)

    def answer(request: httpx.Request) -> httpx.Response:
        if next(served) >= 3:
            stop.set()
        return httpx.Response(status, content=body, headers={"Content-Type": "text/event-stream"})

    transport = httpx.MockTransport(answer)
    with OxenClient("https://hub.oxen.ai", "sk-prop-key-123", transport=transport) as client:
        return list(client.events(stop=stop, reconnect_delay_s=0, max_reconnect_delay_s=0))


sse_fields = st.sampled_from(["event", "data", "id", "retry", "", ":comment", "x"])
sse_values = (
    st.text(max_size=40)
    | st.just("completed")
    | contractish.map(json.dumps)
    | st.fixed_dictionaries(
        {"generation_id": st.text(max_size=5), "status": st.sampled_from(["succeeded", "failed"])},
        optional={"url": json_values, "error_message": json_values, "model_name": json_values},
    ).map(json.dumps)
)
sse_streams = st.lists(st.lists(st.tuples(sse_fields, sse_values), max_size=4), max_size=5).map(
    lambda blocks: "".join(
        "".join(f"{k}: {v.replace(chr(10), ' ').replace(chr(13), ' ')}\n" for k, v in block) + "\n"
        for block in blocks
    ).encode()
)


@settings(max_examples=150, deadline=None)
@given(
    status=st.sampled_from([200, 200, 200, 401, 402, 429, 500, 503]),
    body=sse_streams | bodies,
)
def test_events_stream_total(status: int, body: bytes) -> None:
    """Whatever the events endpoint streams, the client yields valid completion events,
    reconnects, or stops the run (401, no credits): never another exception."""
    try:
        found = events_of(status, body)
    except e.RunFatalError:
        assert status in (401, 402) or b"redit" in body
        return
    assert all(isinstance(ev, CompletionEvent) for ev in found)
