"""Real processes and sockets for the end-to-end tests: ``seedq`` and Flower started as
an operator starts them, waits on ports and conditions, a dedicated append-only Redis a
test may kill and restart, and a TCP proxy that can cut a connection off. Plain
functions and classes; the fixtures that hold them are in conftest.py."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

REPO = Path(__file__).resolve().parents[2]


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def compose_flower_options() -> list[str]:
    """Flower's own options as docker-compose.yml gives them, but where it listens."""
    import yaml

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    argv: list[str] = compose["services"]["flower"]["command"]
    options = argv[argv.index("flower") + 1 :]
    return [a for a in options if not a.startswith(("--address", "--port"))]


@contextlib.contextmanager
def running_flower(env: dict[str, str], user: str, password: str, log: Path) -> Iterator[Any]:
    """Flower as docker-compose.yml starts it (its options, basic auth from
    FLOWER_BASIC_AUTH) on a free port; yields an httpx client of it without credentials
    (pass ``auth=``)."""
    import httpx

    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "flower", "--address=127.0.0.1",
             f"--port={port}", *compose_flower_options()],
            env={**env, "FLOWER_BASIC_AUTH": f"{user}:{password}"},
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        try:
            yield client
        finally:
            client.close()
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def seedq_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """``seedq ARGS`` as an operator runs it, to the end; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def seedq_background(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """``seedq ARGS`` left running, output and errors captured together as text (read
    them with communicate())."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until(
    ready: Callable[[], bool],
    timeout_s: float,
    what: str,
    *,
    proc: subprocess.Popen[Any] | None = None,
    detail: Callable[[], str] | None = None,
    interval_s: float = 0.1,
) -> None:
    """Poll ``ready`` until it holds. Fails, naming ``what``, after ``timeout_s``, or at
    once with its output when ``proc``, the process that should make it hold, has
    exited; ``detail`` tells what a timeout should show besides."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc is not None and proc.poll() is not None:
            output = "\n".join(str(part) for part in proc.communicate() if part)
            pytest.fail(f"{what}: the process exited ({proc.returncode}) first\n{output}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s:.0f} s\n{detail() if detail else ''}")
        time.sleep(interval_s)


def kill(proc: subprocess.Popen[Any]) -> None:
    """Kill ``proc`` if it still runs, and reap it (its pipes read to the end): the
    clean-up of a test that is done with it, or failed before it was."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


class RedisProcess:
    """A dedicated ``redis-server`` with an fsync'd append-only file, which a test may
    kill and start again on the same port and directory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.skip("no redis-server binary")
        self.proc = subprocess.Popen(
            [
                server,
                *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)),
                *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
                *("--logfile", str(self.folder / "redis.log")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if client.ping():
                    break
            except redis.BusyLoadingError:
                pass
            except redis.ConnectionError:
                assert self.proc.poll() is None, (self.folder / "redis.log").read_text()
            assert time.monotonic() < deadline, (self.folder / "redis.log").read_text()
            time.sleep(0.05)
        client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)


class TcpProxy:
    """Forwards a loopback port to ``target``; :meth:`down` cuts every connection and
    refuses new ones (nothing listens) until :meth:`up`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self._stop.clear()
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def down(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
                for sock in (client, upstream):
                    sock.settimeout(None)
                with self._lock:
                    self._conns.update((client, upstream))
                threading.Thread(target=self._serve, args=(client, upstream), daemon=True).start()

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        with self._lock:
            self._conns.difference_update((client, upstream))
        client.close()
        upstream.close()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
