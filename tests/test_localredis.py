"""The private redis-server of a paid local run (cli.localredis), on the real binary:
durable across restarts and across a kill -9 of the server, one run per folder, a stale
server of a killed run restarted on the same data, never a TCP port, and one line with
the way to install it when it is missing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from cli.localredis import (
    MAX_SOCKET_PATH_BYTES,
    _start,
    find_server,
    paths_for,
    private_redis,
    server_config,
)
from seedq.errors import LocalStoreError

needs_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


def directives(text: str) -> dict[str, str]:
    pairs = (line.split(" ", 1) for line in text.splitlines() if line.strip())
    return {name: value for name, value in pairs}


def test_config_is_append_only_fsynced_and_reachable_by_this_user_only(tmp_path: Path) -> None:
    paths = paths_for(tmp_path / "clips")
    conf = directives(server_config(paths))
    assert conf["port"] == "0"  # no TCP listener at all, so no interface to bind
    assert "bind" not in conf
    assert conf["unixsocketperm"] == "700"
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "always"
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["dir"] == f'"{tmp_path.resolve() / "clips" / ".seedq"}"'


def test_a_deep_folder_gets_a_short_socket_found_again_by_the_next_run(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6)
    first, again = paths_for(deep), paths_for(deep)
    assert len(os.fsencode(first.socket)) <= MAX_SOCKET_PATH_BYTES
    assert first.socket == again.socket
    assert first.state_dir == deep.resolve() / ".seedq"
    assert paths_for(tmp_path / "other").socket != first.socket


def test_without_redis_server_one_line_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalStoreError) as caught:
        find_server()
    message = str(caught.value)
    assert "\n" not in message
    assert "apt-get install redis-server" in message and "brew install redis" in message
    with pytest.raises(LocalStoreError), private_redis(tmp_path / "clips"):
        pass
    assert not (tmp_path / "clips").exists()  # nothing started, nothing written


@needs_server
def test_state_survives_a_restart_and_the_server_stops_with_the_block(tmp_path: Path) -> None:
    out = tmp_path / "clips"
    with private_redis(out) as client:
        client.hset("seedq:job:a", "state", "submitting")
        pid = int(paths_for(out).pidfile.read_text())
    assert not _alive(pid)
    with private_redis(out) as client:
        assert client.hget("seedq:job:a", "state") == b"submitting"


@needs_server
def test_a_killed_server_loses_no_acknowledged_write(tmp_path: Path) -> None:
    out = tmp_path / "clips"
    with private_redis(out) as client:
        client.hset("seedq:job:a", "state", "submitting")
        os.kill(int(paths_for(out).pidfile.read_text()), signal.SIGKILL)
    with private_redis(out) as client:
        assert client.hget("seedq:job:a", "state") == b"submitting"


@needs_server
def test_a_second_run_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "clips"
    with private_redis(out) as client:
        refused = rf"another seedq run \(pid {os.getpid()}\)"
        with pytest.raises(LocalStoreError, match=refused), private_redis(out):
            pass
        assert client.ping()  # the refused one did not touch the running server
    with private_redis(tmp_path / "elsewhere"):
        pass


@needs_server
def test_a_stale_server_of_a_killed_run_is_restarted_on_the_same_data(tmp_path: Path) -> None:
    out = tmp_path / "clips"
    paths = paths_for(out)
    paths.state_dir.mkdir(parents=True)
    # As a `seedq run` killed with -9 leaves it: the server alive, nobody holding the lock.
    stale = _start(find_server(), paths)
    try:
        import redis

        redis.Redis(unix_socket_path=str(paths.socket)).set("seedq:seq", 41)
        with private_redis(out) as client:
            assert stale.wait(timeout=30) == 0  # shut down cleanly, not killed
            assert client.incr("seedq:seq") == 42
    finally:
        if stale.poll() is None:
            stale.kill()
            stale.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of a child of this process still answers kill(0); ps tells.
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return bool(state.stdout.strip()) and not state.stdout.strip().startswith("Z")
