"""Result files: presigned links without a bearer, expiry (403) and refresh, downloads counted,
and the rendered video's properties end to end."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import av
import httpx
import pytest

from simulator.files import LinkCheck, check_link, result_url
from simulator.server import SimHandle

MakeSim = Callable[..., SimHandle]
HEADERS = {"Authorization": "Bearer k"}


def test_link_checks_are_pure() -> None:
    url = result_url("http://h", b"s", "g", 100.0)
    query = dict(p.split("=") for p in url.split("?")[1].split("&"))
    assert check_link(b"s", "g", query["expires"], query["sig"], 99.0) is LinkCheck.OK
    assert check_link(b"s", "g", query["expires"], query["sig"], 100.0) is LinkCheck.EXPIRED
    assert check_link(b"s", "other", query["expires"], query["sig"], 1.0) is LinkCheck.BAD_SIGNATURE
    assert check_link(b"s", "g", "200.000", query["sig"], 1.0) is LinkCheck.BAD_SIGNATURE


def _finished(sim: SimHandle, params: dict[str, Any]) -> dict[str, Any]:
    body = httpx.post(f"{sim.url}/api/ai/videos/generate", headers=HEADERS, json=params).json()
    assert body["status"] == "succeeded", body
    return body  # type: ignore[no-any-return]


def test_expiry_and_refresh(make_sim: MakeSim, params: dict[str, Any]) -> None:
    # Long enough for each link to be fetched before it expires on a loaded machine.
    sim = make_sim(url_ttl_s=2.0, fast=True)
    body = _finished(sim, params)
    old = body["result_url"]
    assert httpx.get(old).status_code == 200  # no bearer needed
    time.sleep(2.1)
    assert httpx.get(old).status_code == 403
    fresh = httpx.get(f"{sim.url}/api/ai/queue/{body['generation_id']}", headers=HEADERS).json()[
        "result_url"
    ]
    assert fresh != old and httpx.get(fresh).status_code == 200
    assert httpx.get(fresh.replace("sig=", "sig=0")).status_code == 403
    assert httpx.get(f"{sim.url}/_files/unknown.mp4?expires=1&sig=x").status_code == 404
    assert sim.stats()["downloads"] == 2


def test_a_slow_download_trickles_within_read_timeouts(
    make_sim: MakeSim, params: dict[str, Any]
) -> None:
    sim = make_sim(fast=True, download_s=1.0)
    body = _finished(sim, params)
    started = time.monotonic()
    pieces = []
    with httpx.stream("GET", body["result_url"], timeout=httpx.Timeout(5, read=0.6)) as answer:
        assert answer.status_code == 200
        pieces = list(answer.iter_raw())
    assert time.monotonic() - started >= 1.0  # slow as a whole, yet no read timed out
    video = b"".join(pieces)
    assert len(pieces) > 1 and int(answer.headers["content-length"]) == len(video)
    assert av.open(io.BytesIO(video)).streams.video


@pytest.mark.parametrize(
    ("changes", "size", "duration_s", "audio"),
    [
        ({"aspect_ratio": "16:9", "duration": 4}, (854, 480), 4, False),
        ({"aspect_ratio": "9:16", "duration": 5, "generate_audio": True}, (480, 854), 5, True),
        ({"aspect_ratio": "adaptive", "duration": 4, "watermark": True}, (640, 480), 4, False),
    ],
)
def test_rendered_video(
    make_sim: MakeSim,
    params: dict[str, Any],
    images: str,
    changes: dict[str, Any],
    size: tuple[int, int],
    duration_s: int,
    audio: bool,
) -> None:
    sim = make_sim()
    body = _finished(sim, {**params, **changes, "tail_image_url": f"{images}/tail.jpg"})
    data = httpx.get(body["result_url"]).content
    with av.open(io.BytesIO(data), mode="r") as container:
        video = container.streams.video[0]
        assert (video.width, video.height) == size
        assert abs((container.duration or 0) / 1e6 - duration_s) < 0.5
        assert len(container.streams.audio) == (1 if audio else 0)


def test_auto_duration_is_within_range(make_sim: MakeSim, params: dict[str, Any]) -> None:
    sim = make_sim(fast=True)
    body = _finished(sim, {**params, "duration": -1})
    with av.open(io.BytesIO(httpx.get(body["result_url"]).content), mode="r") as container:
        assert 3.5 < (container.duration or 0) / 1e6 < 15.5


def test_fast_mode_reuses_clips(make_sim: MakeSim, params: dict[str, Any]) -> None:
    sim = make_sim(fast=True)
    # No image is fetched in fast mode: an unreachable URL still succeeds.
    first = _finished(sim, {**params, "input_image": "http://127.0.0.1:9/none.png"})
    second = _finished(sim, {**params, "prompt": "other"})
    a, b = httpx.get(first["result_url"]).content, httpx.get(second["result_url"]).content
    assert a == b and len(a) > 1000
