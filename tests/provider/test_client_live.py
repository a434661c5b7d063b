"""OxenClient over real HTTP against the project's simulator: every method, every error.

Each test gets its own simulator (fast clips, sub-second latency) on loopback. Waits
here are bounded polls of a live server, not retry backoff: the client never sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from PIL import Image

from provider import errors as e
from provider.classify import classify_generation_failure
from provider.client import OxenClient
from provider.models import CompletionEvent, Generation
from simulator.config import SimConfig
from simulator.server import SimHandle, running_simulator, serve_directory

pytestmark = pytest.mark.slow

KEY = "sk-live-SECRET-abcdef0123456789"
MODEL = "bytedance-seedance-2-0-image-to-video"
WAIT_S = 30.0
T = TypeVar("T")


class RecordingTransport(httpx.BaseTransport):
    """The real HTTP transport, keeping a copy of every request's headers."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.seen: list[tuple[str, httpx.Headers]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((str(request.url), request.headers.copy()))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def image_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("images")
    Image.new("RGB", (64, 48), (200, 80, 40)).save(folder / "start.png")
    with serve_directory(folder) as base:
        yield f"{base}/start.png"


def sim_config(**changes: Any) -> SimConfig:
    base: dict[str, Any] = {
        "api_key": KEY,
        "latency_s": (0.05, 0.15),
        "fast": True,
        "keepalive_s": 0.2,
        "seed": 7,
        "unrelated_event_rate": 0.5,
    }
    return SimConfig(**{**base, **changes})


@pytest.fixture
def sim() -> Iterator[SimHandle]:
    with running_simulator(sim_config()) as handle:
        yield handle


@pytest.fixture
def transport() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
def client(sim: SimHandle, transport: RecordingTransport) -> Iterator[OxenClient]:
    with OxenClient(sim.url, KEY, timeout_s=10, transport=transport, allow_private_urls=True) as c:
        yield c


def params(image_url: str, **extra: Any) -> dict[str, Any]:
    return {"prompt": "the fox turns its head", "input_image": image_url, "duration": 4, **extra}


def wait_for(probe: Callable[[], T | None], timeout_s: float = WAIT_S) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def finished(client: OxenClient, generation_id: str) -> Generation:
    def probe() -> Generation | None:
        gen = client.get(generation_id)
        return gen if gen.is_terminal else None

    return wait_for(probe)


def test_enqueue_poll_download_real_mp4(
    image_url: str, transport: RecordingTransport, tmp_path: Path
) -> None:
    with (
        running_simulator(sim_config(fast=False)) as sim,
        OxenClient(sim.url, KEY, transport=transport, allow_private_urls=True) as client,
    ):
        [queued] = client.enqueue(MODEL, params(image_url, aspect_ratio="1:1"))
        assert queued.status == "queued"
        gen = finished(client, queued.generation_id)
        assert gen.status == "succeeded" and gen.result_url, gen.error_message
        assert gen.params()["aspect_ratio"] == "1:1" and gen.params()["input_image"] == image_url
        assert gen.enqueued_at is not None and gen.completed_at is not None
        dest = tmp_path / "out.mp4"
        size = client.download(gen.result_url, dest, max_bytes=50 * 1024 * 1024)
        data = dest.read_bytes()
        assert size == len(data) > 1000 and data[4:8] == b"ftyp"
        assert sim.stats()["downloads"] == 1
        assert client.calls["enqueue"] == 1 and client.calls["download"] == 1
        assert client.calls["get"] == sim.stats()["requests"]["GET /api/ai/queue/{generation_id}"]
    api = [h for url, h in transport.seen if "/api/" in url]
    files = [h for url, h in transport.seen if "/_files/" in url]
    assert api and all(h["authorization"] == f"Bearer {KEY}" for h in api)
    assert files and all("authorization" not in h for h in files)


def test_enqueue_several_and_list_filters(client: OxenClient, image_url: str) -> None:
    gens = client.enqueue(MODEL, params(image_url), num_generations=2, target_namespace="team")
    assert len(gens) == 2
    for g in gens:
        finished(client, g.generation_id)
    done = client.list(model=MODEL, status="succeeded")
    assert done.count == 2 and {g.generation_id for g in done.generations} == {
        g.generation_id for g in gens
    }
    mini = "bytedance-seedance-2-0-mini-image-to-video"
    assert client.list(model=mini, status="succeeded").count == 0
    assert client.list().count == 0  # active only by default
    assert client.list(status="succeeded", media_type="video").count == 2
    with pytest.raises(e.InvalidRequest):
        client.list(status="bogus")


def test_cancel(client: OxenClient, sim: SimHandle, image_url: str) -> None:
    sim.configure(latency_s=(30.0, 30.0))
    [g] = client.enqueue(MODEL, params(image_url))
    client.cancel(g.generation_id)
    assert client.get(g.generation_id).status == "cancelled"
    client.cancel(g.generation_id)  # no effect on a finished one
    assert client.get(g.generation_id).status == "cancelled"
    with pytest.raises(e.NotFound):
        client.cancel("00000000-0000-4000-8000-000000000000")


def test_get_unknown_is_not_found(client: OxenClient) -> None:
    with pytest.raises(e.NotFound) as info:
        client.get("no-such-generation")
    assert info.value.status_code == 404 and info.value.error_type == "resource_not_found"


def collect_events(
    client: OxenClient, stop: threading.Event, **kw: Any
) -> tuple[list[CompletionEvent], list[BaseException], threading.Thread]:
    got: list[CompletionEvent] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            for ev in client.events(stop=stop, **kw):
                got.append(ev)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return got, failures, thread


def test_events_success_and_failure(client: OxenClient, sim: SimHandle, image_url: str) -> None:
    stop = threading.Event()
    got, failures, thread = collect_events(client, stop, reconnect_delay_s=0.01)
    wait_for(lambda: sim.stats()["subscribers"] or None)
    [ok] = client.enqueue(MODEL, params(image_url))
    [bad] = client.enqueue(MODEL, params(image_url, duration=99))
    wait_for(lambda: len(got) >= 2 or None)
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and not failures
    by_id = {ev.generation_id: ev for ev in got}
    assert by_id[ok.generation_id].status == "succeeded" and by_id[ok.generation_id].url
    failed = by_id[bad.generation_id]
    assert failed.status == "failed" and failed.error
    assert isinstance(classify_generation_failure(failed.error), e.GenerationFailed)


def test_events_reconnect_after_dropped_stream(
    client: OxenClient, sim: SimHandle, image_url: str
) -> None:
    sim.configure(drop_rate=1.0)
    stop = threading.Event()
    got, failures, thread = collect_events(
        client, stop, reconnect_delay_s=0.01, max_reconnect_delay_s=0.05
    )
    wait_for(lambda: client.calls["events"] >= 3 or None)
    sim.configure(drop_rate=0.0)
    wait_for(lambda: sim.stats()["subscribers"] or None)
    [g] = client.enqueue(MODEL, params(image_url))
    wait_for(lambda: got or None)
    stop.set()
    thread.join(5)
    assert got[0].generation_id == g.generation_id and not failures
    # The simulator counts a drop as its side of the stream closes, which may come after
    # the client has already reconnected: waited for, not read at once.
    wait_for(lambda: sim.stats()["faults"]["drop"] >= 3 or None)


def test_events_wrong_key_is_fatal(sim: SimHandle) -> None:
    with OxenClient(sim.url, "sk-wrong") as client, pytest.raises(e.Unauthenticated):
        next(client.events(reconnect_delay_s=0))


@pytest.mark.parametrize("call", ["get", "list", "enqueue", "cancel", "generate", "model"])
def test_wrong_key_is_unauthenticated(sim: SimHandle, call: str) -> None:
    with OxenClient(sim.url, "sk-wrong-key") as client:
        actions: dict[str, Callable[[], object]] = {
            "get": lambda: client.get("g"),
            "list": lambda: client.list(),
            "enqueue": lambda: client.enqueue(MODEL, {"prompt": "p"}),
            "cancel": lambda: client.cancel("g"),
            "generate": lambda: client.generate(MODEL, {"prompt": "p"}),
            "model": lambda: client.model(MODEL),
        }
        with pytest.raises(e.Unauthenticated) as info:
            actions[call]()
        assert info.value.status_code == 401 and isinstance(info.value, e.RunFatalError)
        assert "sk-wrong-key" not in str(info.value) + repr(info.value)


def test_server_errors(client: OxenClient, sim: SimHandle) -> None:
    sim.configure(error_rate=1.0)
    with pytest.raises(e.ServerError) as info:
        client.list()
    assert info.value.status_code in (500, 502, 503)
    assert info.value.error_type == "unknown_error"


def test_rate_limited(client: OxenClient, sim: SimHandle) -> None:
    sim.configure(rate_limit_rate=1.0, retry_after_s=3)
    with pytest.raises(e.RateLimited) as info:
        client.get("g")
    assert info.value.retry_after_s == 3.0


def test_dropped_connections(client: OxenClient, sim: SimHandle, image_url: str) -> None:
    sim.configure(drop_rate=1.0)
    with pytest.raises(e.ProviderConnectionError):
        client.get("g")
    sim.configure(drop_rate=0.0, drop_after_rate=1.0)
    with pytest.raises(e.EnqueueOutcomeUnknown):
        client.enqueue(MODEL, params(image_url))
    sim.configure(drop_after_rate=0.0)
    assert sim.stats()["generations"] == 1  # the lost answer's enqueue did happen
    states = ("queued", "processing", "succeeded")
    assert sum(client.list(status=s).count for s in states) == 1


def test_slow_answer_times_out(sim: SimHandle) -> None:
    sim.configure(slow_rate=1.0, slow_delay_s=2.0)
    with OxenClient(sim.url, KEY, timeout_s=0.3) as client, pytest.raises(e.ProviderTimeout):
        client.list()


def test_insufficient_credits(client: OxenClient, sim: SimHandle, image_url: str) -> None:
    sim.configure(latency_s=(0.5, 0.5))
    [g] = client.enqueue(MODEL, params(image_url))
    sim.configure(insufficient_credits=True)
    with pytest.raises(e.InsufficientCredits) as info:
        client.enqueue(MODEL, params(image_url))
    assert info.value.status_code == 402 and isinstance(info.value, e.RunFatalError)
    gen = finished(client, g.generation_id)
    assert gen.status == "failed"
    assert isinstance(classify_generation_failure(gen.error_message), e.InsufficientCredits)


def test_failed_generation_is_permanent(client: OxenClient, image_url: str) -> None:
    [g] = client.enqueue(MODEL, params(image_url, aspect_ratio="2:1"))
    gen = finished(client, g.generation_id)
    assert gen.status == "failed" and gen.error_message
    found = classify_generation_failure(gen.error_message, generation_id=gen.generation_id)
    assert isinstance(found, e.GenerationFailed) and found.generation_id == g.generation_id


def test_generate_sync(client: OxenClient, image_url: str) -> None:
    made = client.generate(MODEL, params(image_url), timeout_s=30)
    assert made.model == MODEL and made.url and len(made.videos) == 1
    with pytest.raises(e.InvalidRequest) as info:
        client.generate(MODEL, params(image_url, duration=99))
    assert info.value.error_type == "invalid_params" and "duration" in info.value.message
    assert client.calls["generate"] == 2


@pytest.mark.parametrize("field", ["request_schema", "json_request_schema"])
def test_model_details(client: OxenClient, sim: SimHandle, field: str) -> None:
    sim.configure(schema_field=field)
    info = client.model(MODEL)
    assert info.id == MODEL and "prompt" in info.required and "duration" in info.properties
    assert info.pricing.method == "per_video_output_second"
    with pytest.raises(e.NotFound):
        client.model("no-such-model")


def test_download_cap_and_expiry(
    client: OxenClient, sim: SimHandle, image_url: str, tmp_path: Path
) -> None:
    [g] = client.enqueue(MODEL, params(image_url))
    gen = finished(client, g.generation_id)
    assert gen.result_url
    with pytest.raises(e.ResultTooLarge):
        client.download(gen.result_url, tmp_path / "small.mp4", max_bytes=100)
    sim.configure(url_ttl_s=0.05)
    stale = client.get(g.generation_id).result_url
    assert stale
    wait_for(lambda: _expired(stale) or None)
    with pytest.raises(e.ResultUrlExpired) as info:
        client.download(stale, tmp_path / "x.mp4", max_bytes=10**8)
    assert info.value.status_code == 403
    sim.configure(url_ttl_s=300)
    fresh = client.get(g.generation_id).result_url  # the documented refresh
    assert fresh and client.download(fresh, tmp_path / "x.mp4", max_bytes=10**8) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mp4"]


def _expired(url: str) -> bool:
    expires = httpx.URL(url).params.get("expires", "0")
    return time.time() > float(expires)
