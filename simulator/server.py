"""Running the simulator: in a background thread for tests and other in-process users
(:func:`running_simulator`, :func:`serve_directory`), or in the foreground for the CLI
(:func:`serve_forever`).

Every server binds 127.0.0.1 (port 0 picks a free port) and stops cleanly on exit: open
event streams are closed first so that uvicorn's graceful shutdown does not wait on them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from simulator.app import build_app
from simulator.config import SimConfig
from simulator.errors import SimulatorError
from simulator.faults import install_log_filter
from simulator.runner import SimCore

T = TypeVar("T")
STARTUP_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 10.0
LOOPBACK = "127.0.0.1"


class SimHandle:
    """A running simulator, driven from another thread: every call hops onto its loop."""

    def __init__(self, url: str, core: SimCore, loop: asyncio.AbstractEventLoop) -> None:
        self.url = url
        self._core, self._loop = core, loop

    def _call(self, fn: Callable[[], T]) -> T:
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout=STARTUP_TIMEOUT_S)

    @property
    def config(self) -> SimConfig:
        return self._core.config

    def stats(self) -> dict[str, Any]:
        """The same JSON as ``GET /_sim/stats``."""
        return self._call(self._core.stats)

    def configure(self, **changes: Any) -> SimConfig:
        """Apply a partial update (raises SimConfigError if the result is invalid)."""
        return self._call(lambda: self._core.configure(changes))

    def reset(self) -> None:
        """Forget every generation and counter."""
        self._call(self._core.reset)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: Any = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)


def _uvicorn_config(app: Any, host: str, port: int, log_level: str) -> uvicorn.Config:
    install_log_filter()
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level, lifespan="on", timeout_graceful_shutdown=2
    )


@contextmanager
def _background(app: Any) -> Iterator[tuple[str, asyncio.AbstractEventLoop]]:
    server = _Server(_uvicorn_config(app, LOOPBACK, 0, "warning"))
    thread = threading.Thread(target=server.run, name="simulator-uvicorn", daemon=True)
    thread.start()
    try:
        for _ in range(int(STARTUP_TIMEOUT_S / 0.01)):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not server.started or server.loop is None:
            raise SimulatorError("the simulator server did not start")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{LOOPBACK}:{port}", server.loop
    finally:
        server.should_exit = True
        thread.join(SHUTDOWN_TIMEOUT_S)


@contextmanager
def running_simulator(config: SimConfig | None = None) -> Iterator[SimHandle]:
    """``with running_simulator(SimConfig(...)) as sim:`` a live simulator at ``sim.url``."""
    app, core = build_app(config or SimConfig())
    with _background(app) as (url, loop):
        handle = SimHandle(url, core, loop)
        try:
            yield handle
        finally:
            # Open event streams would hold uvicorn's graceful shutdown; end them first.
            loop.call_soon_threadsafe(core.bus.close_all)


@contextmanager
def serve_directory(path: str | Path) -> Iterator[str]:
    """Serve the files under ``path`` on loopback; yields the base URL (no trailing slash)."""
    app = Starlette(routes=[Mount("/", app=StaticFiles(directory=str(path)))])
    with _background(app) as (url, _loop):
        yield url


def serve_forever(config: SimConfig, host: str, port: int) -> None:
    """Run in the foreground until interrupted (the ``seedq simulator`` command)."""
    app, _core = build_app(config)
    uvicorn.Server(_uvicorn_config(app, host, port, "info")).run()
