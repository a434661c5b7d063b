"""Notifications end to end, received by a real HTTP server: `seedq run
manifests/example.yaml --notify URL` in embedded mode (one signed POST when the run
finishes, before the command exits); and a cluster of two real `celery worker`
processes, where a run that reaches its budget is told once, then, resumed with more
budget (`seedq resume RUN --budget`), its end is told once too."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from seedq.notify import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.e2e.cluster import clip_rows
from tests.e2e.processes import REPO, seedq_cli

SECRET = "whsec_e2e_never_shown_5f1c"


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A webhook on loopback; yields its URL (with a query string, never to be logged)
    and the requests it got."""
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook?channel=ops", got
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_an_embedded_run_tells_its_webhook_once_when_it_finishes(
    tmp_path: Path,
    no_config_env: dict[str, str],
    receiver: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    url, got = receiver
    env = no_config_env | {"SEEDQ_NOTIFY_SECRET": SECRET}
    done = seedq_cli(
        "run",
        str(REPO / "manifests/example.yaml"),
        "--out",
        str(tmp_path / "videos"),
        "--notify",
        url,
        env=env,
        cwd=tmp_path,
        timeout=200,
    )
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    assert "notified 1 webhook(s)" in done.stdout, text
    assert SECRET not in text and "channel=ops" not in text
    assert len(got) == 1, got
    (sent,) = events(got)  # its signature checked
    assert sent["event"] == "run.finished"
    assert sent["run"]["name"] == "example"  # the manifest's stem
    assert sent["counts"] == {"delivered": 4}
    assert sent["wall_time_s"] > 0
    assert sent["report"]["output"] == str((tmp_path / "videos").resolve())
    assert "finished: 4 delivered of 4" in sent["text"]
    assert SECRET.encode() not in got[0][1]


Received = list[tuple[dict[str, str], bytes]]


def events(got: Received) -> list[dict[str, Any]]:
    """The bodies received, each checked against its signature."""
    bodies = []
    for headers, body in got:
        assert verify(
            SECRET,
            body,
            timestamp=headers[TIMESTAMP_HEADER],
            signature_header=headers[SIGNATURE_HEADER],
            now=time.time(),
        )
        bodies.append(json.loads(body))
    return bodies


def wait_until(what: str, predicate: Callable[[], bool], c: Any, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not reached\n{c.logs()[-4000:]}"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.timeout(240)
def test_a_cluster_tells_a_budget_stop_and_then_the_end_once_each(
    cluster: Any,
    manifest: Callable[[Path, list[dict[str, str]]], Path],
    tmp_path: Path,
    receiver: tuple[str, Received],
) -> None:
    url, got = receiver
    c = cluster(workers=2, env={"SEEDQ_NOTIFY_SECRET": SECRET})
    # 4 s at 480p is 0.384 each: a budget of 1.0 covers two of the five clips.
    path = manifest(tmp_path, clip_rows("n", 5))
    done = c.seedq("submit", str(path), "--budget", "1.0", "--notify", url)
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = done.stdout.strip().splitlines()[-1]

    wait_until("the budget's notification", lambda: len(got) >= 1, c)
    time.sleep(3)  # three more ticks of each worker: nothing more is sent
    first = events(got)
    assert [e["event"] for e in first] == ["run.budget_reached"]
    assert first[0]["run"]["id"] == run_id
    assert first[0]["counts"] == {"delivered": 2, "registered": 3}
    assert first[0]["spend"]["budget"]["cap"] == 1.0

    resumed = c.seedq("resume", run_id, "--budget", "5")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "budget cap 1.00 -> 5.00" in resumed.stdout
    wait_until("the end's notification", lambda: len(got) >= 2, c)
    time.sleep(3)
    told = events(got)
    assert [e["event"] for e in told] == ["run.budget_reached", "run.finished"]
    assert told[1]["counts"] == {"delivered": 5}
    assert len({h["X-Seedq-Delivery"] for h, _ in got}) == 2
    logs = c.logs()
    assert SECRET not in logs
    assert "channel=ops" not in logs and "/hook" not in logs  # the webhook by its host only
    assert "run.finished told to http://127.0.0.1:" in logs
