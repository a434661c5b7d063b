"""OxenClient over httpx.MockTransport: every method, every error class, no network."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from provider import errors as e
from provider.client import OxenClient, backoff_delay_s
from provider.protocol import MAX_PAGE_SIZE
from provider.wire import api_root
from seedq.errors import ConfigError
from seedq.settings import Settings

KEY = "sk-unit-SECRET-9f8e7d6c5b4a"
BASE = "https://hub.oxen.ai"


def public_dns(host: str) -> list[str]:
    """Every result host is public here; the guard's own rules: tests/provider/test_guard.py."""
    return ["93.184.216.34"]


MODEL = "bytedance-seedance-2-0-image-to-video"
Handler = Callable[[httpx.Request], httpx.Response]


def gen(gid: str = "g-1", status: str = "queued", **extra: Any) -> dict[str, Any]:
    return {
        "generation_id": gid,
        "model_name": MODEL,
        "prompt": "p",
        "media_type": "video",
        "status": status,
        "result_url": None,
        "error_message": None,
        "enqueued_at": 1.0,
        "started_at": None,
        "completed_at": None,
        **extra,
    }


class Recorder:
    """A MockTransport handler that records requests and answers from a function."""

    def __init__(self, answer: Handler) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.answer(request)


@pytest.fixture
def make() -> Iterator[Callable[[Handler], tuple[OxenClient, Recorder]]]:
    clients: list[OxenClient] = []

    def build(answer: Handler) -> tuple[OxenClient, Recorder]:
        rec = Recorder(answer)
        client = OxenClient(BASE, KEY, transport=httpx.MockTransport(rec), resolve=public_dns)
        clients.append(client)
        return client, rec

    yield build
    for c in clients:
        c.close()


def respond(status: int = 200, body: Any = None, **kw: Any) -> Handler:
    return lambda request: httpx.Response(status, json=body, **kw)


def test_enqueue_sends_model_params_and_bearer(make: Any) -> None:
    client, rec = make(
        respond(200, {"generations": [{"generation_id": "g-1", "status": "queued"}]})
    )
    out = client.enqueue(MODEL, {"prompt": "p", "duration": 5})
    assert [(g.generation_id, g.status) for g in out] == [("g-1", "queued")]
    req = rec.requests[0]
    assert (req.method, req.url.path) == ("POST", "/api/ai/queue")
    assert json.loads(req.content) == {"model": MODEL, "prompt": "p", "duration": 5}
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.headers["Content-Type"] == "application/json"
    assert client.calls["enqueue"] == 1


def test_enqueue_optional_fields_and_model_wins(make: Any) -> None:
    gens = [{"generation_id": f"g-{i}"} for i in range(3)]
    client, rec = make(respond(200, {"generations": gens}))
    out = client.enqueue(
        MODEL, {"model": "other", "prompt": "p"}, num_generations=3, target_namespace="team"
    )
    assert [g.status for g in out] == ["queued"] * 3
    assert json.loads(rec.requests[0].content) == {
        "model": MODEL,
        "prompt": "p",
        "num_generations": 3,
        "target_namespace": "team",
    }


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (respond(500, {"error": {"message": "boom"}}), e.ServerError),
        (respond(429, None, headers={"Retry-After": "4"}), e.RateLimited),
        (
            respond(
                401,
                {
                    "error": {
                        "type": "unauthenticated",
                        "title": "Unauthorized",
                        "detail": "bad key",
                    },
                    "status": "error",
                },
            ),
            e.Unauthenticated,
        ),
        (respond(402, {"error": {"message": "Insufficient credits"}}), e.InsufficientCredits),
        (respond(400, {"error": {"message": "num_generations out of range"}}), e.InvalidRequest),
        (respond(404, {"error": {"type": "resource_not_found"}}), e.NotFound),
        (respond(422, {"error": {"type": "invalid_params"}}), e.InvalidRequest),
        (respond(403, {"error": {"message": "no"}}), e.Forbidden),
        (lambda r: httpx.Response(200, content=b"<html>proxy</html>"), e.EnqueueOutcomeUnknown),
        (respond(200, {"generations": []}), e.EnqueueOutcomeUnknown),
    ],
)
def test_enqueue_errors(make: Any, answer: Handler, expected: type[e.ProviderError]) -> None:
    client, _ = make(answer)
    with pytest.raises(expected):
        client.enqueue(MODEL, {"prompt": "p"})


def raiser(exc: type[httpx.TransportError]) -> Handler:
    def answer(request: httpx.Request) -> httpx.Response:
        raise exc("simulated", request=request)

    return answer


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError, e.ProviderConnectionError),  # never sent: plain transient
        (httpx.ConnectTimeout, e.ProviderTimeout),
        (httpx.PoolTimeout, e.ProviderTimeout),
        (httpx.ReadTimeout, e.EnqueueOutcomeUnknown),  # sent, answer lost
        (httpx.ReadError, e.EnqueueOutcomeUnknown),
        (httpx.RemoteProtocolError, e.EnqueueOutcomeUnknown),
    ],
)
def test_enqueue_transport_errors(
    make: Any, exc: type[httpx.TransportError], expected: type[e.ProviderError]
) -> None:
    client, _ = make(raiser(exc))
    with pytest.raises(expected) as info:
        client.enqueue(MODEL, {"prompt": "p"})
    assert isinstance(info.value, e.TransientProviderError)


def test_get(make: Any) -> None:
    client, rec = make(respond(200, gen("g/1", "processing", duration=5)))
    got = client.get("g/1")
    assert got.status == "processing" and got.params()["duration"] == 5
    assert rec.requests[0].url.raw_path == b"/api/ai/queue/g%2F1"  # no path injection
    assert client.calls["get"] == 1


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (respond(404, {"error": {"type": "resource_not_found", "title": "Not found"}}), e.NotFound),
        (
            respond(503, None, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
            e.ServerError,
        ),
        (lambda r: httpx.Response(200, content=b"<html>login</html>"), e.MalformedResponse),
        (lambda r: httpx.Response(200, content=b'{"status": "queued"}'), e.MalformedResponse),
        (
            lambda r: httpx.Response(200, content=b'{"generation_id": "g", "status"'),
            e.MalformedResponse,
        ),
        (raiser(httpx.ReadTimeout), e.ProviderTimeout),
        (raiser(httpx.ConnectError), e.ProviderConnectionError),
        (raiser(httpx.RemoteProtocolError), e.ProviderConnectionError),
    ],
)
def test_get_errors(make: Any, answer: Handler, expected: type[e.ProviderError]) -> None:
    client, _ = make(answer)
    with pytest.raises(expected):
        client.get("g-1")


def test_get_rejects_empty_id(make: Any) -> None:
    client, rec = make(respond(200, gen()))
    with pytest.raises(e.InvalidRequest):
        client.get(" ")
    assert rec.requests == []


def test_rate_limited_carries_retry_after(make: Any) -> None:
    client, _ = make(respond(429, {"error": {"message": "slow"}}, headers={"Retry-After": "12"}))
    with pytest.raises(e.RateLimited) as info:
        client.get("g")
    assert info.value.retry_after_s == 12.0 and info.value.status_code == 429


def test_list_filters(make: Any) -> None:
    client, rec = make(respond(200, {"count": 1, "generations": [gen("g-9", "succeeded")]}))
    listed = client.list(model=MODEL, status="succeeded", repo="r", folder="f")
    assert listed.count == 1 and listed.generations[0].generation_id == "g-9"
    assert dict(rec.requests[0].url.params) == {
        "model": MODEL,
        "status": "succeeded",
        "repo": "r",
        "folder": "f",
    }
    client.list()
    assert rec.requests[1].url.query == b""
    assert client.calls["list"] == 2


@pytest.mark.parametrize(
    "answer",
    [
        respond(200, {"status": "success", "generation_id": "g-1"}),  # the published answer
        respond(200, gen(status="cancelled")),
        lambda r: httpx.Response(204),
        lambda r: httpx.Response(200, content=b""),
        lambda r: httpx.Response(200, content=b"not json"),
    ],
)
def test_cancel_takes_any_2xx(make: Any, answer: Handler) -> None:
    client, rec = make(answer)
    client.cancel("g-1")
    assert rec.requests[0].method == "DELETE" and rec.requests[0].url.path == "/api/ai/queue/g-1"
    assert client.calls["cancel"] == 1


def test_cancel_unknown_is_not_found(make: Any) -> None:
    client, _ = make(respond(404, {"error": {"type": "resource_not_found"}}))
    with pytest.raises(e.NotFound):
        client.cancel("nope")


def test_generate_uses_long_read_timeout(make: Any) -> None:
    seen: dict[str, Any] = {}

    def answer(request: httpx.Request) -> httpx.Response:
        seen.update(request.extensions["timeout"])
        published = {"created": 1, "model": MODEL, "videos": [{"url": "https://f/x.mp4"}]}
        return httpx.Response(200, json=published)

    client, rec = make(answer)
    got = client.generate(MODEL, {"prompt": "p"})
    assert got.url == "https://f/x.mp4" and got.model == MODEL
    assert rec.requests[0].url.path == "/api/ai/videos/generate"
    assert json.loads(rec.requests[0].content) == {"model": MODEL, "prompt": "p"}
    assert seen["read"] == 20 * 60.0 and seen["connect"] == 5.0
    client.generate(MODEL, {"prompt": "p"}, timeout_s=99)
    assert seen["read"] == 99
    assert client.calls["generate"] == 2


def test_generate_reads_a_row_shaped_answer_too(make: Any) -> None:
    client, _ = make(respond(200, gen(status="succeeded", result_url="https://f/y.mp4")))
    assert client.generate(MODEL, {"prompt": "p"}).url == "https://f/y.mp4"


def test_generate_invalid_params_is_permanent(make: Any) -> None:
    client, _ = make(
        respond(
            400,
            {
                "error": {"type": "invalid_params", "detail": "duration"},
                "status": "error",
                "status_message": "invalid_params",
            },
        )
    )
    with pytest.raises(e.InvalidRequest) as info:
        client.generate(MODEL, {"prompt": "p", "duration": 99})
    assert info.value.error_type == "invalid_params" and "duration" in info.value.message


@pytest.mark.parametrize("field", ["request_schema", "json_request_schema"])
@pytest.mark.parametrize("wrapped", [False, True])
def test_model_details(make: Any, field: str, wrapped: bool) -> None:
    obj = {
        "id": MODEL,
        "pricing": {"cost_per_second": 0.1},
        field: {
            "properties": {"duration": {"type": "integer", "default": -1}},
            "required": ["prompt"],
        },
    }
    client, rec = make(respond(200, {"model": obj} if wrapped else obj))
    info = client.model(MODEL)
    assert info.id == MODEL and info.default_of("duration") == -1 and info.required == ["prompt"]
    assert rec.requests[0].url.path == f"/api/ai/models/{MODEL}"


def test_model_unknown(make: Any) -> None:
    client, _ = make(respond(404, {"error": {"message": "Model not found"}}))
    with pytest.raises(e.NotFound, match="Model not found"):
        client.model("nope")


def test_default_timeouts_and_base_url() -> None:
    with OxenClient(BASE + "/api/", KEY, timeout_s=12) as client:
        assert client.base_url == BASE
        assert client.timeout.read == 12 and client.timeout.connect == 5.0
    assert api_root("http://x:1") == "http://x:1"


def test_from_settings() -> None:
    settings = Settings(
        provider_url="http://127.0.0.1:9", oxen_api_key=SecretStr(KEY), http_timeout_s=3
    )
    with OxenClient.from_settings(settings) as client:
        assert client.base_url == "http://127.0.0.1:9" and client.timeout.read == 3
        assert client.timeout.connect == 3  # never longer than the whole timeout
    with pytest.raises(ConfigError):
        OxenClient.from_settings(Settings())


@pytest.mark.parametrize(
    ("attempt", "expected"), [(0, 1.0), (1, 2.0), (3, 8.0), (5, 30.0), (10**6, 30.0), (-1, 1.0)]
)
def test_backoff_delay(attempt: int, expected: float) -> None:
    assert backoff_delay_s(attempt, base_s=1.0, max_s=30.0) == expected


# -- download ---------------------------------------------------------------------------

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 1000


def test_download_streams_to_file_without_auth(make: Any, tmp_path: Path) -> None:
    client, rec = make(
        lambda r: httpx.Response(200, content=VIDEO, headers={"Content-Type": "video/mp4"})
    )
    dest = tmp_path / "out.mp4"
    assert client.download("https://files.example/x.mp4?sig=1", dest, max_bytes=10**7) == len(VIDEO)
    assert dest.read_bytes() == VIDEO
    req = rec.requests[0]
    assert req.headers["host"] == "files.example"
    assert "authorization" not in req.headers
    assert KEY not in str(req.headers) and KEY not in str(req.url)
    assert list(tmp_path.iterdir()) == [dest]
    assert client.calls["download"] == 1


def test_download_follows_redirect_without_auth(make: Any, tmp_path: Path) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["host"] == "a.example":
            return httpx.Response(302, headers={"Location": "https://b.example/v.mp4"})
        return httpx.Response(200, content=VIDEO)

    client, rec = make(answer)
    client.download("https://a.example/v", tmp_path / "v.mp4", max_bytes=10**7)
    assert [r.headers["host"] for r in rec.requests] == ["a.example", "b.example"]
    assert all("authorization" not in r.headers for r in rec.requests)


def chunked(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("declared", [True, False])
def test_download_size_cap(make: Any, tmp_path: Path, declared: bool) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if declared:
            return httpx.Response(200, content=VIDEO)
        return httpx.Response(200, content=chunked(VIDEO))  # no Content-Length

    client, _ = make(answer)
    dest = tmp_path / "big.mp4"
    with pytest.raises(e.ResultTooLarge) as info:
        client.download("https://f.example/x", dest, max_bytes=5000)
    assert isinstance(info.value, e.PermanentJobError) and info.value.max_bytes == 5000
    assert list(tmp_path.iterdir()) == []  # partial file removed


@pytest.mark.parametrize("status", [401, 403, 404, 410])
def test_download_expired(make: Any, tmp_path: Path, status: int) -> None:
    client, _ = make(lambda r: httpx.Response(status, content=b"<Error>AccessDenied</Error>"))
    with pytest.raises(e.ResultUrlExpired) as info:
        client.download("https://f.example/x", tmp_path / "x.mp4", max_bytes=100)
    assert isinstance(info.value, e.PermanentJobError) and info.value.status_code == status
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (lambda r: httpx.Response(503, content=b"busy"), e.ServerError),
        (lambda r: httpx.Response(429, headers={"Retry-After": "2"}), e.RateLimited),
        (
            lambda r: httpx.Response(
                200, content=b"<html>x</html>", headers={"Content-Type": "text/html"}
            ),
            e.MalformedResponse,
        ),
        (lambda r: httpx.Response(200, content=b""), e.MalformedResponse),
        (raiser(httpx.ReadTimeout), e.ProviderTimeout),
        (raiser(httpx.ConnectError), e.ProviderConnectionError),
    ],
)
def test_download_transient(
    make: Any, tmp_path: Path, answer: Handler, expected: type[e.ProviderError]
) -> None:
    client, _ = make(answer)
    with pytest.raises(expected):
        client.download("https://f.example/x", tmp_path / "x.mp4", max_bytes=100)
    assert list(tmp_path.iterdir()) == []


def test_download_dropped_midway_removes_partial(make: Any, tmp_path: Path) -> None:
    def body() -> Iterator[bytes]:
        yield VIDEO[:1000]
        raise httpx.RemoteProtocolError("peer closed connection")

    client, _ = make(lambda r: httpx.Response(200, content=body()))
    with pytest.raises(e.ProviderConnectionError):
        client.download("https://f.example/x", tmp_path / "x.mp4", max_bytes=10**7)
    assert list(tmp_path.iterdir()) == []


def test_download_unwritable_destination(make: Any, tmp_path: Path) -> None:
    client, _ = make(lambda r: httpx.Response(200, content=VIDEO))
    with pytest.raises(e.ResultWriteError):
        client.download("https://f.example/x", tmp_path / "missing-dir" / "x.mp4", max_bytes=10**7)


def test_download_refuses_non_http(make: Any, tmp_path: Path) -> None:
    client, rec = make(lambda r: httpx.Response(200, content=VIDEO))
    with pytest.raises(e.InvalidRequest):
        client.download("file:///etc/passwd", tmp_path / "x", max_bytes=10)
    assert rec.requests == []


# -- events -----------------------------------------------------------------------------


def sse(*blocks: str) -> bytes:
    return "".join(blocks).encode()


DONE = (
    'event: media_generation_completed\ndata: {"generation_id":"g-1","status":"succeeded",'
    '"media_type":"video","model":"m","url":"https://f/x.mp4"}\n\n'
)
FAILED = (
    'event: media_generation_completed\ndata: {"generation_id":"g-2","status":"failed",'
    '"media_type":"video","error":"blocked"}\n\n'
)


def stream(*payloads: bytes | BaseException) -> Handler:
    """Answer successive connections with successive payloads (an exception is raised)."""
    it = iter(payloads)

    def answer(request: httpx.Request) -> httpx.Response:
        item = next(it)
        if isinstance(item, BaseException):
            raise item
        return httpx.Response(200, content=item, headers={"Content-Type": "text/event-stream"})

    return answer


def test_events_filters_and_parses(make: Any) -> None:
    body = sse(
        ": keep-alive\n\n",
        'event: something_else\ndata: {"generation_id":"x","status":"succeeded"}\n\n',
        'data: {"generation_id":"y","status":"succeeded"}\n\n',  # unnamed: "message"
        DONE,
        "event: media_generation_completed\ndata: {not json\n\n",
        'event: media_generation_completed\ndata: {"status":"succeeded"}\n\n',
        ": keep-alive\n\n",
        FAILED,
    )
    client, rec = make(stream(body))
    events = client.events(reconnect_delay_s=0)
    first, second = next(events), next(events)
    events.close()
    assert (first.generation_id, first.status, first.url) == ("g-1", "succeeded", "https://f/x.mp4")
    assert (second.generation_id, second.status, second.error) == ("g-2", "failed", "blocked")
    req = rec.requests[0]
    assert req.url.path == "/api/events" and req.headers["Accept"] == "text/event-stream"
    assert req.headers["Authorization"] == f"Bearer {KEY}"


def test_events_reconnect_after_drop_and_errors(make: Any) -> None:
    req = httpx.Request("GET", BASE)
    answers = stream(
        sse(DONE),  # then the stream ends: reconnect
        httpx.ConnectError("refused", request=req),
        httpx.ReadTimeout("idle", request=req),
        sse(FAILED),
    )
    errors_first: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if len(errors_first) < 1:
            errors_first.append(1)
            return httpx.Response(503, content=b"warming up")
        if len(errors_first) < 2:
            errors_first.append(2)
            return httpx.Response(200, content=b"<html/>", headers={"Content-Type": "text/html"})
        return answers(request)

    client, rec = make(answer)
    events = client.events(reconnect_delay_s=0)
    got = [next(events).generation_id, next(events).generation_id]
    events.close()
    assert got == ["g-1", "g-2"]
    assert client.calls["events"] == 6 == len(rec.requests)


def test_events_stop_flag(make: Any) -> None:
    stop = threading.Event()
    client, rec = make(
        lambda r: httpx.Response(
            200, content=sse(DONE, DONE), headers={"Content-Type": "text/event-stream"}
        )
    )
    seen = []
    for ev in client.events(stop=stop, reconnect_delay_s=0):
        seen.append(ev)
        stop.set()
    assert len(seen) == 1 and len(rec.requests) == 1


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, {"error": {"type": "unauthenticated"}}, e.Unauthenticated),
        (402, {"error": {"message": "Insufficient credits"}}, e.InsufficientCredits),
    ],
)
def test_events_fatal(make: Any, status: int, body: Any, expected: type[e.ProviderError]) -> None:
    client, _ = make(respond(status, body))
    with pytest.raises(expected):
        next(client.events(reconnect_delay_s=0))


# -- billing and history: GET /api/ai/generations, kill and retry ---------------------


def test_billed_unwraps_the_envelope_and_reads_the_decimal_cost(make: Any) -> None:
    row = gen("g-1", "succeeded", cost="1.920000", username="u", target_repo=None)
    body = {"status": "success", "status_message": "resource_found", "generation": row}
    client, rec = make(respond(200, body))
    billed = client.billed("g-1")
    assert (billed.generation_id, billed.cost) == ("g-1", pytest.approx(1.92))
    assert rec.requests[0].url.path == "/api/ai/generations/g-1"
    assert "cost" not in billed.params() and "target_repo" not in billed.params()
    assert client.calls["billed"] == 1


@pytest.mark.parametrize("cost", [None, "n/a", "", True, {"amount": 1}])
def test_an_unreadable_cost_is_unknown_not_an_error(make: Any, cost: Any) -> None:
    client, _ = make(respond(200, {"generation": gen("g-1", "succeeded", cost=cost)}))
    assert client.billed("g-1").cost is None


def test_history_pages_with_filters_and_capped_size(make: Any) -> None:
    page = {
        "count": 2,
        "generations": [gen("g-2", cost="0.5"), gen("g-1", cost=None)],
        "page_number": 1,
        "page_size": 2,
        "total_pages": 3,
        "total_entries": 6,
        "total_cost": "2.5",
        "something_new": {"x": 1},
    }
    client, rec = make(respond(200, page))
    got = client.history(page=1, page_size=5000, model=MODEL, status="succeeded")
    assert [g.generation_id for g in got.generations] == ["g-2", "g-1"]
    assert got.total_cost == pytest.approx(2.5) and not got.is_last
    query = dict(rec.requests[0].url.params)
    assert query == {
        "page": "1",
        "page_size": str(MAX_PAGE_SIZE),
        "model": MODEL,
        "status": "succeeded",
    }


@pytest.mark.parametrize(
    ("page", "last"),
    [
        ({"generations": [], "page_number": 1, "total_pages": 4}, True),
        ({"generations": [gen()], "page_number": 4, "total_pages": 4}, True),
        ({"generations": [gen()], "page_number": 2, "total_pages": 4}, False),
        ({"generations": [gen()], "page_size": 2}, True),  # no totals: a short page ends
        ({"generations": [gen(), gen("g-2")], "page_size": 2}, False),
    ],
)
def test_the_last_page(make: Any, page: dict[str, Any], last: bool) -> None:
    client, _ = make(respond(200, page))
    assert client.history().is_last is last


@pytest.mark.parametrize(
    "body",
    [
        {"generations": [{"generation_id": "g-new", "status": "queued"}]},
        {**gen("g-new"), "retried_from_id": "g-old"},
    ],
)
def test_retry_answers_the_new_generation(make: Any, body: dict[str, Any]) -> None:
    client, rec = make(respond(200, body))
    assert client.retry("g-old").generation_id == "g-new"
    assert (rec.requests[0].method, rec.requests[0].url.path) == (
        "POST",
        "/api/ai/queue/g-old/retry",
    )


def test_a_retry_whose_answer_is_lost_may_have_created_one(make: Any) -> None:
    def lost(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("lost", request=request)

    client, _ = make(lost)
    with pytest.raises(e.EnqueueOutcomeUnknown):
        client.retry("g-old")
