"""The fetch guard: every URL the worker fetches, and every redirect hop, is checked,
and the connection goes to the address that was checked (no DNS rebinding)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from provider import errors as e
from provider.client import OxenClient
from provider.guard import (
    GuardedTransport,
    check_url,
    public_addresses,
    resolve_host,
)

KEY = "sk-guard-test-key-0123456789"
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40
DNS = {
    "cdn.example": ["93.184.216.34", "2606:2800:220:1::1"],
    "v6.example": ["2606:2800:220:1::1"],
    "inside.example": ["10.1.2.3"],
    "mixed.example": ["93.184.216.34", "192.168.1.10"],
    "metadata.example": ["169.254.169.254"],
    "mapped.example": ["::ffff:127.0.0.1"],
    "v6local.example": ["fe80::1"],
    "ula.example": ["fd12:3456::1"],
    "loop6.example": ["::1"],
    "nat64.example": ["64:ff9b::7f00:1"],
}


def fake_resolve(host: str) -> list[str]:
    if host == "down.example":
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    if host not in DNS:
        # A literal address resolves to itself, as getaddrinfo does.
        if host.replace(".", "").isdigit() or ":" in host:
            return [host]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return DNS[host]


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("https://cdn.example/a.mp4", None),
        ("https://cdn.example:8443/a.mp4?sig=1", None),
        ("https://8.8.8.8/a.mp4", None),
        ("https://[2606:4700::1111]/a.mp4", None),
        ("http://cdn.example/a.mp4", "plain http"),
        ("ftp://cdn.example/a.mp4", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://cdn.example/", "only http and https"),
        ("https://user:pw@cdn.example/a.mp4", "user name or password"),
        ("https://user@cdn.example/a.mp4", "user name or password"),
        ("https:///a.mp4", "no host"),
        ("https://cdn.example:99999/a.mp4", "invalid port"),
        ("https://127.0.0.1/a.mp4", "loopback"),
        ("https://localhost/a.mp4", "this machine"),
        ("https://localhost./a.mp4", "this machine"),
        ("https://x.localhost/a.mp4", "this machine"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://10.0.0.1/a", "private"),
        ("https://100.64.0.1/a", "private"),
        ("https://0.0.0.0/a", "private"),
        ("https://224.0.0.1/a", "private"),
        ("https://240.0.0.1/a", "private"),
        ("https://[::1]/a.mp4", "loopback"),
        ("https://[::]/a.mp4", "loopback"),
        ("https://[fc00::1]/a.mp4", "loopback"),
        ("https://[fdff:ffff::1]/a.mp4", "loopback"),
        ("https://[fe80::1]/a.mp4", "loopback"),
        ("https://[ff02::1]/a.mp4", "loopback"),
        ("https://[::ffff:127.0.0.1]/a.mp4", "loopback"),
        ("https://[::ffff:169.254.169.254]/a.mp4", "loopback"),
        ("https://[::127.0.0.1]/a.mp4", "loopback"),
        ("https://[64:ff9b::a9fe:a9fe]/a.mp4", "loopback"),
        ("https://[2002:7f00:1::]/a.mp4", "loopback"),
        ("https://2130706433/a.mp4", "loopback"),
        ("https://0x7f000001/a.mp4", "loopback"),
        ("https://0177.0.0.1/a.mp4", "loopback"),
        ("https://0x7f.1/a.mp4", "loopback"),
        ("https://127.1/a.mp4", "loopback"),
        ("https://1.2.3.4.5/a.mp4", "neither a name nor a valid IP"),
        ("https://09.1.1.1/a.mp4", "neither a name nor a valid IP"),
        ("https://4294967296/a.mp4", "neither a name nor a valid IP"),
        ("https://１２７.０.０.１/a.mp4", "loopback"),
        ("https://inside.example/a.mp4", "resolves to 10.1.2.3"),
        ("https://mixed.example/a.mp4", "resolves to 192.168.1.10"),
        ("https://metadata.example/a.mp4", "resolves to 169.254.169.254"),
        ("https://mapped.example/a.mp4", "resolves to ::ffff:127.0.0.1"),
        ("https://v6local.example/a.mp4", "resolves to fe80::1"),
        ("https://ula.example/a.mp4", "resolves to fd12:3456::1"),
        ("https://loop6.example/a.mp4", "resolves to ::1"),
        ("https://nat64.example/a.mp4", "resolves to 64:ff9b::7f00:1"),
    ],
)
def test_url_table(url: str, refusal: str | None) -> None:
    def check() -> list[str]:
        return public_addresses(check_url(url, allow_private=False), fake_resolve)

    if refusal is None:
        assert check()
    else:
        with pytest.raises(e.RefusedUrl, match=refusal) as info:
            check()
        assert isinstance(info.value, e.PermanentJobError)
        assert info.value.error_type == "refused_url"


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8100/a", "http://localhost/a", "https://inside.example/a", "http://[::1]/"],
)
def test_private_and_http_allowed_when_told(url: str) -> None:
    check_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "https://u:p@cdn.example/", "ftp://127.0.0.1/"]
)
def test_scheme_and_userinfo_refused_even_when_private_allowed(url: str) -> None:
    with pytest.raises(e.RefusedUrl):
        check_url(url, allow_private=True)


@pytest.mark.parametrize(
    ("host", "kind"),
    [("down.example", "dns_temporary"), ("nowhere.example", "dns_unresolved")],
)
def test_dns_failure_is_transient(host: str, kind: str) -> None:
    with pytest.raises(e.ProviderConnectionError) as info:
        public_addresses(host, fake_resolve)
    assert info.value.error_type == kind


def test_resolve_host_uses_the_system_resolver() -> None:
    assert {"127.0.0.1", "::1"} & set(resolve_host("localhost"))
    assert resolve_host("127.0.0.1") == ["127.0.0.1"]


# --- through the client's download, hop by hop -----------------------------------------

Answer = Callable[[httpx.Request], httpx.Response]
Download = Callable[..., tuple[list[httpx.Request], int]]


@pytest.fixture
def download(tmp_path: Path) -> Iterator[Download]:
    clients: list[OxenClient] = []

    def run(
        answer: Answer, url: str, *, resolve: Callable[[str], list[str]] = fake_resolve
    ) -> tuple[list[httpx.Request], int]:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return answer(request)

        client = OxenClient(
            "https://hub.oxen.ai", KEY, transport=httpx.MockTransport(handler), resolve=resolve
        )
        clients.append(client)
        try:
            return seen, client.download(url, tmp_path / "v.mp4", max_bytes=10**6)
        except e.ProviderError:
            assert not (tmp_path / "v.mp4").exists()
            raise

    yield run
    for c in clients:
        c.close()


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=VIDEO, headers={"Content-Type": "video/mp4"})


def test_download_connects_to_the_checked_address(download: Download) -> None:
    seen, size = download(ok, "https://cdn.example/v.mp4?X-Amz-Signature=abc")
    assert size == len(VIDEO)
    (request,) = seen
    assert request.url.host == "93.184.216.34"  # the checked address, IPv4 first
    assert request.headers["host"] == "cdn.example"  # presigned signatures cover it
    assert request.extensions["sni_hostname"] == "cdn.example"  # TLS verifies the name
    assert request.url.query == b"X-Amz-Signature=abc"
    assert "authorization" not in request.headers


def test_download_ipv6_only_host(download: Download) -> None:
    seen, _ = download(ok, "https://v6.example/v.mp4")
    assert seen[0].url.host == "2606:2800:220:1::1"


def test_dns_rebinding_cannot_move_the_connection(download: Download) -> None:
    """A name that answers public once and private afterwards: the request still goes
    to the public address that was checked, and the name is looked up once."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"], ["127.0.0.1"]])
    lookups: list[str] = []

    def rebinding(host: str) -> list[str]:
        lookups.append(host)
        return next(answers)

    seen, _ = download(ok, "https://rebind.example/v.mp4", resolve=rebinding)
    assert lookups == ["rebind.example"]
    assert [r.url.host for r in seen] == ["93.184.216.34"]


@pytest.mark.parametrize(
    ("location", "refusal"),
    [
        ("https://169.254.169.254/latest/meta-data/iam", "link-local"),
        ("http://169.254.169.254/latest/meta-data/iam", "link-local"),
        ("https://metadata.example/latest", "resolves to 169.254.169.254"),
        ("https://[::1]:8080/admin", "loopback"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        ("https://2130706433/", "loopback"),
        ("https://inside.example/x", "resolves to 10.1.2.3"),
        ("http://cdn.example/v.mp4", "plain http"),
        ("file:///etc/passwd", "only http and https"),
        ("https://user:pw@cdn.example/v.mp4", "user name or password"),
        ("//localhost/v.mp4", "this machine"),
    ],
)
def test_every_redirect_hop_is_checked(download: Download, location: str, refusal: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": location})

    with pytest.raises(e.RefusedUrl, match=refusal):
        download(answer, "https://cdn.example/v.mp4")


def test_good_redirect_is_followed_and_pinned(download: Download) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["host"] == "cdn.example":
            return httpx.Response(302, headers={"Location": "https://v6.example/final.mp4"})
        return ok(request)

    seen, _ = download(answer, "https://cdn.example/v.mp4")
    assert [(r.headers["host"], r.url.host) for r in seen] == [
        ("cdn.example", "93.184.216.34"),
        ("v6.example", "2606:2800:220:1::1"),
    ]


def test_redirects_are_bounded(download: Download) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "https://cdn.example/again"})

    with pytest.raises(e.MalformedResponse, match="TooManyRedirects"):
        download(answer, "https://cdn.example/v.mp4")


def test_size_cap_holds_after_a_redirect(download: Download, tmp_path: Path) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v.mp4":
            return httpx.Response(302, headers={"Location": "https://cdn.example/big.mp4"})
        return httpx.Response(200, content=b"x" * (10**6 + 1))

    with pytest.raises(e.ResultTooLarge):
        download(answer, "https://cdn.example/v.mp4")


# --- on a real socket: refused before any connection ----------------------------------


@pytest.fixture
def local_server() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(VIDEO)))
            self.end_headers()
            self.wfile.write(VIDEO)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def test_real_loopback_is_never_contacted(local_server: tuple[str, list[str]]) -> None:
    where, hits = local_server
    port = where.split(":")[1]
    transport = GuardedTransport(allow_private=False)
    with httpx.Client(transport=transport) as client:
        for url in (f"https://{where}/a", f"https://localhost:{port}/a", f"http://{where}/a"):
            with pytest.raises(e.RefusedUrl):
                client.get(url)
    assert hits == []
    with httpx.Client(transport=GuardedTransport(allow_private=True)) as client:
        assert client.get(f"http://{where}/a").content == VIDEO
    assert hits == ["/a"]
