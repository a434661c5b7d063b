"""A result download has a deadline for the whole of it, not only for each read
(issue 13, finding 7): a real local HTTP server that drips its body, or its headers, a
byte at a time, faster than any read timeout, is cut off near the deadline with a
transient error."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpcore
import httpx
import pytest

from provider import errors as e
from provider.client import OxenClient
from seedq.errors import TransientError
from seedq.settings import DEFAULT_DOWNLOAD_DEADLINE_S, load_settings

DRIP_BYTES = 60
DRIP_EVERY_S = 0.05  # the whole body takes 3 s; no read waits more than 0.05 s
DEADLINE_S = 1.0


class Drip(BaseHTTPRequestHandler):
    """Answers every GET with a video whose bytes come one at a time (``/stall``: whose
    first byte comes, and then nothing; ``/slow-headers``: whose headers come one byte
    at a time; ``/silent``: nothing at all)."""

    def do_GET(self) -> None:
        try:
            if self.path.endswith("/silent"):
                time.sleep(DRIP_BYTES * DRIP_EVERY_S)
                return
            if self.path.endswith("/slow-headers"):
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(DRIP_BYTES):
                    self.wfile.write(b"a")
                    self.wfile.flush()
                    time.sleep(DRIP_EVERY_S)
                self.wfile.write(b"\r\nContent-Type: video/mp4\r\nContent-Length: 1\r\n\r\n\0")
                return
        except OSError:
            return  # the client hung up
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(DRIP_BYTES))
        self.end_headers()
        try:
            if self.path.endswith("/stall"):  # one byte, then silence past any deadline
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(DRIP_BYTES * DRIP_EVERY_S)
                return
            for _ in range(DRIP_BYTES):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(DRIP_EVERY_S)
        except OSError:
            pass  # the client hung up: what the deadline is for

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def drip_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/clip.mp4"
    finally:
        server.shutdown()
        server.server_close()


def test_a_trickling_download_stops_near_its_deadline(drip_url: str, tmp_path: Path) -> None:
    dest = tmp_path / "v.mp4"
    with OxenClient(
        "http://127.0.0.1:1", "k", allow_private_urls=True, download_deadline_s=DEADLINE_S
    ) as client:
        started = time.monotonic()
        with pytest.raises(e.ProviderTimeout) as raised:
            client.download(drip_url, dest, max_bytes=10**6)
        elapsed = time.monotonic() - started
    # Past the deadline, by about one drip; far from the 3 s the body takes.
    assert DEADLINE_S <= elapsed < DEADLINE_S + 1.0
    assert isinstance(raised.value, TransientError)  # retried later: the link stays valid
    assert raised.value.error_type == "download_deadline"
    assert "within its 1 s deadline" in str(raised.value)
    assert list(tmp_path.iterdir()) == []  # no half file left behind


@pytest.fixture
def slow_reader() -> Iterator[OxenClient]:
    """A client whose reads may each wait 30 s, under a 1 s download deadline."""
    with OxenClient(
        "http://127.0.0.1:1",
        "k",
        allow_private_urls=True,
        timeout_s=30.0,
        download_deadline_s=DEADLINE_S,
    ) as client:
        yield client


def test_a_read_that_outlasts_the_deadline_is_cut_at_it(
    drip_url: str, tmp_path: Path, slow_reader: OxenClient
) -> None:
    """A 30 s read timeout, a 1 s deadline: the stalled read is not waited out."""
    started = time.monotonic()
    with pytest.raises(e.ProviderTimeout, match="within its 1 s deadline"):
        slow_reader.download(drip_url.replace("clip.mp4", "stall"), tmp_path / "v", max_bytes=99)
    assert time.monotonic() - started < DEADLINE_S + 1.0


@pytest.mark.parametrize("path", ["slow-headers", "silent"])
def test_the_deadline_covers_the_response_headers(
    drip_url: str, tmp_path: Path, path: str, slow_reader: OxenClient
) -> None:
    """Headers that trickle in (each byte well within the 30 s read timeout) or never
    come are cut at the deadline too, not when the last header byte arrives."""
    started = time.monotonic()
    with pytest.raises(e.ProviderTimeout, match="within its 1 s deadline") as raised:
        slow_reader.download(drip_url.replace("clip.mp4", path), tmp_path / "v", max_bytes=99)
    assert time.monotonic() - started < DEADLINE_S + 0.5  # the headers take 3 s
    assert raised.value.error_type == "download_deadline"
    assert list(tmp_path.iterdir()) == []


def test_only_a_running_download_has_a_deadline() -> None:
    """The transport's sockets are cut by the deadline of the download around them, and
    by nothing else; httpx's private pool it wraps is still where it was."""
    from provider.download import Deadline, _bounded, deadline_transport

    assert _bounded(30.0, httpcore.ReadTimeout) == 30.0
    with Deadline.start(DEADLINE_S).applied():
        assert 0 < (_bounded(30.0, httpcore.ReadTimeout) or 0) <= DEADLINE_S
    with Deadline.start(0).applied(), pytest.raises(httpcore.ReadTimeout):
        _bounded(30.0, httpcore.ReadTimeout)
    deadline_transport(httpx.Limits()).close()  # RuntimeError if httpx moved its pool


def test_a_download_within_its_deadline_is_whole(drip_url: str, tmp_path: Path) -> None:
    dest = tmp_path / "v.mp4"
    with OxenClient("http://127.0.0.1:1", "k", allow_private_urls=True) as client:
        assert client.download(drip_url, dest, max_bytes=10**6) == DRIP_BYTES
    assert dest.read_bytes() == b"\0" * DRIP_BYTES


def test_the_deadline_is_a_setting_with_a_production_default() -> None:
    assert DEFAULT_DOWNLOAD_DEADLINE_S == 600.0
    settings = load_settings(oxen_api_key="k")
    with OxenClient.from_settings(settings) as client:
        assert client.download_deadline_s == DEFAULT_DOWNLOAD_DEADLINE_S
    with OxenClient.from_settings(load_settings(oxen_api_key="k", download_deadline_s=7)) as c:
        assert c.download_deadline_s == 7
