"""Fixtures of the simulator tests: input images served on loopback, simulators started
with a seed and tiny latencies, and helpers that poll without timing assumptions."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from simulator.config import SimConfig
from simulator.server import SimHandle, running_simulator, serve_directory

MODEL = "bytedance-seedance-2-0-image-to-video"
KEY = "test-key"
WAIT_S = 20.0

MakeSim = Callable[..., SimHandle]
WaitFor = Callable[[httpx.Client, str], dict[str, Any]]


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    start = Image.new("RGB", (320, 240), (200, 60, 40))
    for x in range(0, 320, 40):
        start.paste((30, 90, 200), (x, 0, x + 20, 240))
    start.save(folder / "start.png")
    start.save(folder / "face-portrait.png")
    Image.new("RGB", (240, 320), (20, 160, 80)).save(folder / "tail.jpg", "JPEG")
    (folder / "notimage.png").write_bytes(b"this is not an image")
    (folder / "huge.png").write_bytes(b"\0" * (30 * 1024 * 1024 + 10))
    return folder


@pytest.fixture(scope="session")
def images(image_dir: Path) -> Iterator[str]:
    """Base URL of the served image folder."""
    with serve_directory(image_dir) as url:
        yield url


@pytest.fixture
def make_sim() -> Iterator[MakeSim]:
    """Start a simulator with test defaults overridden by keyword arguments."""
    with ExitStack() as stack:

        def make(**changes: Any) -> SimHandle:
            base: dict[str, Any] = {
                "seed": 7,
                "latency_s": (0.0, 0.05),
                "keepalive_s": 5.0,
                "unrelated_event_rate": 0.0,
            }
            return stack.enter_context(running_simulator(SimConfig(**{**base, **changes})))

        yield make


@pytest.fixture
def sim(make_sim: MakeSim) -> SimHandle:
    return make_sim()


@pytest.fixture
def client(sim: SimHandle) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=sim.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    ) as c:
        yield c


@pytest.fixture
def params(images: str) -> dict[str, Any]:
    """A valid, quick enqueue body."""
    return {
        "model": MODEL,
        "prompt": "the camera drifts",
        "input_image": f"{images}/start.png",
        "resolution": "480p",
        "duration": 4,
        "aspect_ratio": "16:9",
    }


def wait_finished(client: httpx.Client, generation_id: str) -> dict[str, Any]:
    """Poll until the generation is terminal; fails the test after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/api/ai/queue/{generation_id}").json()
        if body["status"] not in ("queued", "processing"):
            return body
        time.sleep(0.02)
    raise AssertionError(f"generation {generation_id} did not finish")


@pytest.fixture
def wait_for() -> WaitFor:
    return wait_finished


@pytest.fixture
def enqueue(client: httpx.Client, params: dict[str, Any]) -> Callable[..., str]:
    """Enqueue ``params`` updated with keyword arguments; returns the generation id."""

    def run(**changes: Any) -> str:
        response = client.post("/api/ai/queue", json={**params, **changes})
        assert response.status_code == 200, response.text
        gen_id: str = response.json()["generations"][0]["generation_id"]
        return gen_id

    return run
