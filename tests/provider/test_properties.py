"""Property tests: whatever arrives, the classifiers and parsers answer with a provider
error or a valid model, never another exception."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.provider import errors as e
from worker.provider.classify import (
    classify_generation_failure,
    classify_response,
    error_details,
    parse_retry_after,
)
from worker.provider.client import OxenClient
from worker.provider.models import (
    CompletionEvent,
    EnqueueResponse,
    Generation,
    GenerationList,
    parse_json,
    parse_model,
)

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
