"""`seedq run manifests/example.yaml --notify URL` with no other configuration (embedded
mode): a real HTTP receiver gets one signed POST when the run finishes, before the
command exits."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seedq.notify import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.e2e.conftest import REPO, seedq_cli

SECRET = "whsec_e2e_never_shown_5f1c"


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
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
    headers, body = got[0]
    assert verify(
        SECRET,
        body,
        timestamp=headers[TIMESTAMP_HEADER],
        signature_header=headers[SIGNATURE_HEADER],
        now=time.time(),
    )
    sent = json.loads(body)
    assert sent["event"] == "run.finished"
    assert sent["run"]["name"] == "example"  # the manifest's stem
    assert sent["counts"] == {"delivered": 4}
    assert sent["wall_time_s"] > 0
    assert sent["report"]["output"] == str((tmp_path / "videos").resolve())
    assert "finished: 4 delivered of 4" in sent["text"]
    assert SECRET.encode() not in body
