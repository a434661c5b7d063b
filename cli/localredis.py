"""A private, durable ``redis-server`` for one output directory: the job store of a paid
``seedq run`` on one machine (no broker configured, ``OXEN_API_KEY`` set).

Everything lives under ``DIR/.seedq/``: the configuration, the append-only file, the
log, the pid file and a lock. The server listens on a unix socket only (mode 700, no
TCP port at all), so nothing on the network and no other user reaches it.

Durability: ``appendfsync always``. Every write the pipeline is answered for is on disk
before the answer, so even a power cut cannot take back a job's ``submitting`` mark
(written before its enqueue is sent): losing it would make the next run enqueue, and
pay for, that clip again. The cost is one fsync per write, a few dozen per clip, nothing
beside a generation that takes minutes. (``everysec`` would lose nothing to a killed
process either, but up to a second of writes to a machine crash.)

One run per directory: ``DIR/.seedq/lock`` is held with ``flock`` for the whole run. The
kernel drops it when the holder dies, however it dies, so a ``kill -9`` never leaves the
directory locked, while a second live run is refused. Whoever holds the lock is the only
user of the server: a ``redis-server`` still answering on the socket when the lock is
taken is a stale one of a killed run. It is shut down (an append-only server flushes its
file when it shuts down) and a fresh one started on the same data.

A crash of seedq leaves the server running (it is in its own session, so a Ctrl-C meant
for seedq does not stop it before seedq has finished with it); the next run stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess  # nosec B404 # the private redis-server: an argument list, no shell
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from seedq.errors import LocalStoreError

STATE_DIR = ".seedq"
INSTALL_HINT = (
    "install it (Debian/Ubuntu: `apt-get install redis-server`; macOS: `brew install redis`; "
    "Fedora: `dnf install redis`) or point SEEDQ_REDIS_URL and SEEDQ_BROKER_URL at a Redis"
)
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 30.0
# sun_path is 108 bytes on Linux, 104 on macOS; a deep DIR gets its socket in the temp
# directory instead, under a name derived from DIR (so a stale one is found again).
MAX_SOCKET_PATH_BYTES = 100


@dataclass(frozen=True, slots=True)
class LocalRedisPaths:
    """Where each file of the private server lives."""

    state_dir: Path
    socket: Path

    @property
    def lock(self) -> Path:
        return self.state_dir / "lock"

    @property
    def config(self) -> Path:
        return self.state_dir / "redis.conf"

    @property
    def log(self) -> Path:
        return self.state_dir / "redis.log"

    @property
    def pidfile(self) -> Path:
        return self.state_dir / "redis.pid"


def paths_for(out_dir: Path) -> LocalRedisPaths:
    state = out_dir.resolve() / STATE_DIR
    socket = state / "redis.sock"
    if len(os.fsencode(socket)) > MAX_SOCKET_PATH_BYTES:
        digest = hashlib.sha256(os.fsencode(state)).hexdigest()[:16]
        socket = Path(tempfile.gettempdir()) / f"seedq-{digest}.sock"
    return LocalRedisPaths(state, socket)


def _quoted(value: Path) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def server_config(paths: LocalRedisPaths) -> str:
    """The whole configuration: no TCP, the unix socket for this user only, the append-
    only file fsynced on every write, no snapshots and no eviction (jobs are the ledger)."""
    lines = [
        "port 0",
        f"unixsocket {_quoted(paths.socket)}",
        "unixsocketperm 700",
        f"dir {_quoted(paths.state_dir)}",
        "appendonly yes",
        "appendfsync always",
        'save ""',
        "maxmemory-policy noeviction",
        # Job hashes stay compact (README, "Retention"); the older name, which Redis 6
        # still installed by some distributions knows and Redis 7 takes as an alias.
        "hash-max-ziplist-value 1024",
        "daemonize no",
        f"pidfile {_quoted(paths.pidfile)}",
        f"logfile {_quoted(paths.log)}",
        "databases 1",
    ]
    return "\n".join(lines) + "\n"


def find_server() -> str:
    """The ``redis-server`` binary on PATH; one line saying how to get it otherwise."""
    found = shutil.which("redis-server")
    if found is None:
        raise LocalStoreError(
            "a paid run keeps its state in a private redis-server, and none is installed: "
            + INSTALL_HINT
        )
    return found


def _client(paths: LocalRedisPaths) -> redis.Redis:
    return redis.Redis(
        unix_socket_path=str(paths.socket), socket_timeout=10, health_check_interval=30
    )


def _answers(paths: LocalRedisPaths) -> bool:
    if not paths.socket.exists():
        return False
    probe = redis.Redis(
        unix_socket_path=str(paths.socket), socket_timeout=2, retry=Retry(NoBackoff(), 0)
    )
    try:
        return bool(probe.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        probe.close()


def _shutdown(paths: LocalRedisPaths) -> None:
    """Stop the server on the socket, flushing its append-only file; wait until it is gone."""
    # No retries: the answer to SHUTDOWN is the connection closing, which redis-py would
    # otherwise retry with a backoff (seconds of waiting for a server that has gone).
    client = redis.Redis(
        unix_socket_path=str(paths.socket),
        socket_timeout=STOP_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )
    with contextlib.suppress(redis.ConnectionError, redis.TimeoutError, OSError):
        client.shutdown()  # answers by closing the connection once it has stopped
    client.close()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _answers(paths):
        if time.monotonic() > deadline:
            raise LocalStoreError(f"the private redis-server on {paths.socket} would not stop")
        time.sleep(0.1)


@contextlib.contextmanager
def _exclusive(paths: LocalRedisPaths, out_dir: Path) -> Iterator[IO[str]]:
    paths.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle = paths.lock.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise LocalStoreError(
                f"another seedq run (pid {holder}) is using {out_dir}; "
                "wait for it to end, or pass another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield handle
    finally:
        handle.close()  # closing the file releases the lock


def _start(binary: str, paths: LocalRedisPaths) -> subprocess.Popen[bytes]:
    paths.config.write_text(server_config(paths))
    with contextlib.suppress(FileNotFoundError):
        paths.socket.unlink()  # left by a server that died with its owner
    # bandit B603: the redis-server find_server found, an argument list, no shell.
    proc = subprocess.Popen(  # nosec B603
        [binary, str(paths.config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers(paths):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise LocalStoreError(
                f"the private redis-server did not start; see {paths.log}: {_last_line(paths)}"
            )
        time.sleep(0.05)
    return proc


def _last_line(paths: LocalRedisPaths) -> str:
    try:
        lines = paths.log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1] if lines else "empty log"


@contextlib.contextmanager
def private_redis(out_dir: Path) -> Iterator[redis.Redis]:
    """A client of this directory's private server, started (or restarted) for the
    duration of the block and shut down cleanly after it."""
    binary = find_server()
    paths = paths_for(out_dir)
    with _exclusive(paths, out_dir):
        if _answers(paths):
            _shutdown(paths)  # stale: its seedq died; we hold the lock, so nobody uses it
        proc = _start(binary, paths)
        client = _client(paths)
        try:
            yield client
        finally:
            client.close()
            try:
                _shutdown(paths)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
