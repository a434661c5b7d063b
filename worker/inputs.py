"""Input images the provider can fetch.

The producer stores an image reference as an http(s) URL, an ``s3://bucket/key`` URI or
a local file's real path. The provider only fetches http(s), so before submitting,
:func:`publish_inputs` swaps the other two for URLs through an :class:`InputPublisher`,
after checking them again against the :class:`InputRules` (the manifest was checked by
the producer, but the worker's credentials are what an s3:// input is presigned with,
and the worker is what reads a local file):

- :class:`S3InputPublisher` uploads a local file once under a content-addressed key
  (``{prefix}/_inputs/{sha256}{suffix}``) and hands out presigned GET URLs; an s3://
  input under ``SEEDQ_INPUT_S3_ALLOW`` is presigned as it is.
- :class:`LoopbackInputPublisher` (embedded runs, local provider) serves copies of the
  published files from a tiny HTTP server on 127.0.0.1; only those, under random paths.
- :class:`NoInputPublisher` refuses both, saying what to configure.

A local file is read through :mod:`worker.input_files` (no symlink followed) into a
file of the publisher's own, and that copy is what is uploaded or served.

Every failure is :class:`~worker.errors.InputUnavailable` (the job fails), except an S3
outage, which stays :class:`~storage.errors.StorageUnavailable` (retried).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from seedq.refs import RefError, S3Grant, check_s3_uri, check_url_host
from worker.errors import InputUnavailable
from worker.input_files import check_inside, copy_image

if TYPE_CHECKING:
    from seedq.settings import Settings
    from storage.s3 import S3Storage

IMAGE_FIELDS = ("input_image", "tail_image_url")
INPUTS_FOLDER = "_inputs"
CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}
SERVE_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class InputRules:
    """Where inputs may come from, as the worker's own settings say."""

    s3_allow: tuple[S3Grant, ...] = ()  # () refuses every s3:// input
    root: Path | None = None  # SEEDQ_INPUT_ROOT; None: as the producer checked

    @classmethod
    def from_settings(cls, settings: Settings) -> InputRules:
        return cls(settings.input_s3_grants, settings.input_root)


class InputPublisher(Protocol):
    """Turns non-http image references into URLs the provider can fetch."""

    def publish_file(self, path: Path) -> str:
        """A URL serving the local image file at ``path`` (absolute)."""
        ...

    def publish_s3(self, uri: str) -> str:
        """A URL serving the object ``s3://bucket/key``."""
        ...


def publish_inputs(
    params: dict[str, Any], publisher: InputPublisher, rules: InputRules
) -> dict[str, Any]:
    """A copy of ``params`` whose image references are all http(s) URLs."""
    published = dict(params)
    for name in IMAGE_FIELDS:
        value = params.get(name)
        if isinstance(value, str) and value:
            published[name] = _publish_one(name, value, publisher, rules)
    return published


def _publish_one(name: str, value: str, publisher: InputPublisher, rules: InputRules) -> str:
    scheme = urlsplit(value).scheme.lower()
    if scheme in ("http", "https"):
        return value
    if scheme == "s3":
        try:
            check_s3_uri(value, rules.s3_allow)  # before anything is presigned
        except RefError as exc:
            raise InputUnavailable(f"{name}: {exc}") from None
        return publisher.publish_s3(value)
    path = Path(value)
    if (scheme and len(scheme) > 1) or not path.is_absolute():
        raise InputUnavailable(f"{name}: {value!r} is not a URL, s3:// URI or absolute path")
    check_inside(path, rules.root)
    return publisher.publish_file(path)


def split_s3_uri(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    key = parts.path.lstrip("/")
    if parts.scheme != "s3" or not parts.netloc or not key:
        raise InputUnavailable(f"{uri!r} is not s3://bucket/key")
    return parts.netloc, key


class S3InputPublisher:
    """Publishes through the S3 output store: upload once, presign each time."""

    def __init__(self, storage: S3Storage, *, expires_s: int) -> None:
        self.storage = storage
        self.expires_s = expires_s

    def publish_file(self, path: Path) -> str:
        suffix = path.suffix.lower()
        with tempfile.TemporaryDirectory(prefix="seedq-input-") as folder:
            copy = Path(folder) / f"image{suffix}"
            digest = copy_image(path, copy)
            # The key is the content's hash: the same image used by a thousand jobs is
            # uploaded once, and put_file skips it when the stored checksum matches.
            key = f"{INPUTS_FOLDER}/{digest}{suffix}"
            self.storage.put_file(key, copy, sha256=digest, content_type=CONTENT_TYPES[suffix])
        return self.storage.share_url(key, expires_s=self.expires_s)

    def publish_s3(self, uri: str) -> str:
        bucket, key = split_s3_uri(uri)
        # A HEAD first, so a missing object fails this job now with a clear reason
        # instead of as an opaque fetch error at the provider, after queueing.
        if self.storage.stat_object(bucket, key) is None:
            raise InputUnavailable(f"input image {uri} does not exist")
        return self.storage.presign(bucket, key, expires_s=self.expires_s)


class NoInputPublisher:
    """For a remote provider without an S3 store: only http(s) inputs can work."""

    def publish_file(self, path: Path) -> str:
        raise InputUnavailable(
            f"local input image {path} cannot reach a remote provider: set SEEDQ_OUTPUT to "
            "s3://bucket/prefix so inputs are uploaded there, or use an http(s) URL"
        )

    def publish_s3(self, uri: str) -> str:
        raise InputUnavailable(
            f"input image {uri} needs SEEDQ_OUTPUT=s3://... so it can be presigned"
        )


class LoopbackInputPublisher:
    """Serves published files over HTTP on 127.0.0.1, for a provider on this machine.

    A published file is copied (:func:`~worker.input_files.copy_image`) into a private
    folder of this publisher under its content's hash, and that copy is what is
    served: a file swapped after publishing is never read. Each content gets a random
    128-bit path; a request is answered only when its path is exactly one of those, so
    there is nothing to list, guess or traverse. The server starts on first use; it
    stops and the copies go with :meth:`close` (or the ``with`` block).
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._routes: dict[str, Path] = {}
        self._tokens: dict[str, str] = {}  # content digest -> route
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LoopbackInputPublisher:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        server = self._start()
        return f"http://{self.host}:{server.server_address[1]}"

    def publish_file(self, path: Path) -> str:
        suffix = path.suffix.lower()
        folder = self._copies()
        incoming = folder / f"{secrets.token_hex(8)}.part"
        try:
            digest = copy_image(path, incoming)
            copy = folder / f"{digest}{suffix}"
            with self._lock:
                route = self._tokens.get(digest + suffix)
                if route is None:
                    incoming.replace(copy)
                    route = f"/{secrets.token_urlsafe(16)}{suffix}"
                    self._tokens[digest + suffix] = route
                    self._routes[route] = copy
        finally:
            incoming.unlink(missing_ok=True)
        return self.base_url + route

    def _copies(self) -> Path:
        with self._lock:
            if self._folder is None:
                # mkdtemp: mode 0700, so no other user can swap a copy either.
                self._folder = tempfile.TemporaryDirectory(prefix="seedq-inputs-")
            return Path(self._folder.name)

    def publish_s3(self, uri: str) -> str:
        raise InputUnavailable(
            f"input image {uri}: s3:// inputs need an S3 output store to presign them; "
            "in a local run use a local file or an http(s) URL"
        )

    def route(self, request_path: str) -> Path | None:
        """The file a request path serves, or None (exact match only)."""
        with self._lock:
            return self._routes.get(urlsplit(request_path).path)

    def close(self) -> None:
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            folder, self._folder = self._folder, None
            self._routes.clear()
            self._tokens.clear()
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        if folder is not None:
            folder.cleanup()

    def _start(self) -> ThreadingHTTPServer:
        with self._lock:
            if self._server is None:
                server = ThreadingHTTPServer((self.host, 0), _handler_for(self))
                server.daemon_threads = True
                # A short poll so close() returns quickly; idle cost is negligible.
                thread = threading.Thread(
                    target=server.serve_forever,
                    kwargs={"poll_interval": 0.05},
                    name="seedq-input-server",
                    daemon=True,
                )
                thread.start()
                self._server, self._thread = server, thread
            return self._server


def _handler_for(publisher: LoopbackInputPublisher) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "seedq-inputs"

        def do_GET(self) -> None:
            self._serve(body=True)

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def _serve(self, *, body: bool) -> None:
            path = publisher.route(self.path)
            try:
                source = path.open("rb") if path is not None else None
            except OSError:
                source = None
            if path is None or source is None:
                self.send_error(404)
                return
            with source:
                size = os.fstat(source.fileno()).st_size
                self.send_response(200)
                content_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                if body:
                    # The provider hanging up mid-transfer is its business, not ours.
                    with contextlib.suppress(ConnectionError):
                        shutil.copyfileobj(source, self.wfile, SERVE_CHUNK_BYTES)

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: every fetch is already visible in the provider's events

    return Handler


def make_publisher(settings: Settings) -> InputPublisher:
    """S3 when the output is S3; loopback when the provider runs on a private address
    (the simulator); otherwise one that refuses local and s3:// inputs clearly."""
    if settings.output_is_s3:
        from storage.s3 import S3Storage

        return S3InputPublisher(
            S3Storage.from_settings(settings), expires_s=settings.input_url_expires_s
        )
    host = urlsplit(settings.provider_url).hostname or ""
    try:
        check_url_host(host, allow_private=False)
    except RefError:
        return LoopbackInputPublisher()
    return NoInputPublisher()
