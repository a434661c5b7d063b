"""The fetch guard: every URL a worker fetches itself (result files, scheduled
manifests) goes through :class:`GuardedTransport`, so every redirect hop is checked too.

A request is refused (:class:`~provider.errors.RefusedUrl`) unless its URL is
https (plain http only with ``allow_private``, for local simulators and MinIO), carries
no user name or password, and names a host that neither is nor resolves to a loopback,
private, link-local, multicast or reserved address (:func:`seedq.refs.is_private_address`,
which also reads ``2130706433``, ``0177.0.0.1`` and IPv4 inside IPv6). The connection
then goes to an address that was checked, with the name kept in the Host header and in
TLS SNI (so the certificate is still verified against the name): a DNS answer that
changes between the check and the connect (rebinding) cannot lead it inside.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from provider import errors as e
from seedq.refs import RefError, check_http_url, is_private_address

Resolver = Callable[[str], list[str]]
MAX_REDIRECTS = 5


def resolve_host(host: str) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6), in the resolver's order."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_url(url: str, *, allow_private: bool) -> str:
    """The URL's host once its form is acceptable; RefusedUrl naming the rule it breaks."""
    try:
        check_http_url(url, allow_private=allow_private)
    except RefError as exc:
        raise e.RefusedUrl(f"refused URL: {exc}") from None
    parts = urlsplit(url)
    if parts.scheme == "http" and not allow_private:
        raise e.RefusedUrl(
            "refused URL: plain http (set SEEDQ_ALLOW_PRIVATE_URLS for local services)"
        )
    return parts.hostname or ""


def public_addresses(host: str, resolve: Resolver = resolve_host) -> list[str]:
    """The addresses of ``host``, every one of them public; RefusedUrl if any is not
    (a name with one private address among public ones is refused), and
    ProviderConnectionError when it does not resolve (DNS down is not the URL's fault)."""
    try:
        addresses = resolve(host)
    except (socket.gaierror, UnicodeError) as exc:
        temporary = isinstance(exc, socket.gaierror) and exc.errno in (
            socket.EAI_AGAIN,
            errno.EAGAIN,
        )
        raise e.ProviderConnectionError(
            f"DNS lookup of {host} failed{' for now' if temporary else ''}",
            error_type="dns_temporary" if temporary else "dns_unresolved",
        ) from None
    if not addresses:
        raise e.ProviderConnectionError(f"host {host} has no address", error_type="dns_unresolved")
    for address in addresses:
        if is_private_address(address):
            raise e.RefusedUrl(
                f"refused URL: host {host} resolves to {address}, a loopback, private or "
                "link-local address (set SEEDQ_ALLOW_PRIVATE_URLS for local tests)"
            )
    return addresses


def _preferred(addresses: list[str]) -> str:
    """IPv4 first: a host without IPv6 routes is common; the reverse is rare."""
    return next((a for a in addresses if ":" not in a), addresses[0])


class GuardedTransport(httpx.BaseTransport):
    """Checks each request's URL, then sends it to the checked address through ``inner``."""

    def __init__(
        self,
        inner: httpx.BaseTransport | None = None,
        *,
        allow_private: bool,
        resolve: Resolver = resolve_host,
    ) -> None:
        self._inner = inner or httpx.HTTPTransport()
        self.allow_private = allow_private
        self._resolve = resolve

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = check_url(str(request.url), allow_private=self.allow_private)
        if self.allow_private:
            return self._inner.handle_request(request)
        address = _preferred(public_addresses(host, self._resolve))
        if address == request.url.host:
            return self._inner.handle_request(request)
        # The Host header was set from the name when the request was built and is kept;
        # sni_hostname makes TLS name (and verify) the host, not the address.
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=address),
            headers=request.headers,
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": request.url.host},
        )
        return self._inner.handle_request(pinned)

    def close(self) -> None:
        self._inner.close()


def guarded_client(
    *,
    allow_private: bool,
    timeout: httpx.Timeout | float,
    transport: httpx.BaseTransport | None = None,
    resolve: Resolver = resolve_host,
    headers: dict[str, str] | None = None,
    limits: httpx.Limits | None = None,
) -> httpx.Client:
    """An ``httpx.Client`` whose every request and redirect hop is guarded. Proxies from
    the environment are not used: the guard must see the real destination."""
    inner = transport or httpx.HTTPTransport(limits=limits or httpx.Limits())
    return httpx.Client(
        transport=GuardedTransport(inner, allow_private=allow_private, resolve=resolve),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        trust_env=False,
        timeout=timeout,
        headers=headers,
    )
