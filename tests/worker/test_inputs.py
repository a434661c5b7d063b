"""Input publishing (loopback server, S3 on moto); the URL check before a fetch is in
tests/provider/test_guard.py."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from seedq.refs import parse_s3_allow
from seedq.settings import load_settings
from storage.errors import StorageUnavailable
from storage.s3 import S3Storage, make_client
from worker.errors import InputUnavailable
from worker.inputs import (
    InputRules,
    LoopbackInputPublisher,
    NoInputPublisher,
    S3InputPublisher,
    make_publisher,
    publish_inputs,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "start.png"
    Image.new("RGB", (64, 48), (200, 60, 40)).save(path)
    return path


@pytest.fixture
def loopback() -> Iterator[LoopbackInputPublisher]:
    with LoopbackInputPublisher() as publisher:
        yield publisher


def raw_get(base_url: str, path: str) -> int:
    """GET a path exactly as written: no client-side normalisation of ``..``."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


# --- publish_inputs -----------------------------------------------------------------------


class RecordingPublisher:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def publish_file(self, path: Path) -> str:
        self.calls.append(f"file:{path}")
        return f"https://inputs.example/{path.name}"

    def publish_s3(self, uri: str) -> str:
        self.calls.append(uri)
        return "https://inputs.example/s3"


def test_publish_inputs_replaces_only_non_http_refs() -> None:
    publisher = RecordingPublisher()
    params = {
        "prompt": "a cat",
        "input_image": "/data/images/cat.png",
        "tail_image_url": "s3://bucket/tail.jpg",
        "duration": 5,
    }
    published = publish_inputs(params, publisher, InputRules(parse_s3_allow("bucket")))
    assert published == {
        "prompt": "a cat",
        "input_image": "https://inputs.example/cat.png",
        "tail_image_url": "https://inputs.example/s3",
        "duration": 5,
    }
    assert params["input_image"] == "/data/images/cat.png"  # the job's own copy is kept
    assert publisher.calls == ["file:/data/images/cat.png", "s3://bucket/tail.jpg"]


@pytest.mark.parametrize("url", ["https://cdn.example/a.png", "HTTP://cdn.example/a.png?x=1"])
def test_publish_inputs_passes_urls_through(url: str) -> None:
    publisher = RecordingPublisher()
    assert publish_inputs({"input_image": url}, publisher, InputRules()) == {"input_image": url}
    assert publisher.calls == []


@pytest.mark.parametrize("value", ["images/cat.png", "ftp://host/cat.png", "data:image/png,xx"])
def test_publish_inputs_refuses_other_refs(value: str) -> None:
    with pytest.raises(InputUnavailable, match="not a URL"):
        publish_inputs({"input_image": value}, RecordingPublisher(), InputRules())


# --- loopback -----------------------------------------------------------------------------


def test_loopback_serves_a_registered_file(loopback: LoopbackInputPublisher, image: Path) -> None:
    url = loopback.publish_file(image)

    response = httpx.get(url, timeout=5)

    assert url.startswith("http://127.0.0.1:") and url.endswith(".png")
    assert response.status_code == 200
    assert response.content == image.read_bytes()
    assert response.headers["content-type"] == "image/png"
    assert httpx.head(url, timeout=5).headers["content-length"] == str(image.stat().st_size)
    assert loopback.publish_file(image) == url  # one route per file


def test_loopback_serves_nothing_else(
    loopback: LoopbackInputPublisher, image: Path, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    url = loopback.publish_file(image)
    route = urlsplit(url).path
    base = loopback.base_url
    for path in [
        "/",
        "/start.png",
        str(image),
        f"{route}/../secret.txt",
        f"/../{tmp_path.name}/secret.txt",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/../../../../etc/passwd",
        route + "x",
        route.upper(),
    ]:
        assert raw_get(base, path) == 404, path
    assert raw_get(base, route + "?download=1") == 200  # a query does not change the route


def test_loopback_serves_the_bytes_checked_not_the_name(
    loopback: LoopbackInputPublisher, image: Path, tmp_path: Path
) -> None:
    """A file swapped for a symlink to a secret after publishing: the copy made from
    the descriptor that was checked is served, never the name opened again."""
    original = image.read_bytes()
    url = loopback.publish_file(image)
    secret = tmp_path / ".env"
    secret.write_text("OXEN_API_KEY=sk-live-secret\n")
    image.unlink()
    image.symlink_to(secret)

    assert httpx.get(url, timeout=5).content == original


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere" / ".env"
    path.parent.mkdir()
    path.write_text("OXEN_API_KEY=sk-live-secret\n")
    return path


@pytest.mark.parametrize("publisher_kind", ["loopback", "s3"])
def test_a_symlink_swapped_in_after_validation_is_never_followed(
    request: pytest.FixtureRequest, publisher_kind: str, tmp_path: Path, secret: Path
) -> None:
    """The producer kept the real path; by publish time the file, or a folder on its
    way, is a symlink to a dotenv file: refused, nothing read, nothing uploaded."""
    publisher: Any = request.getfixturevalue(
        "loopback" if publisher_kind == "loopback" else "s3_publisher"
    )
    images = tmp_path / "manifest" / "images"
    images.mkdir(parents=True)
    as_file = images / "y.png"
    as_file.symlink_to(secret)
    (tmp_path / "manifest" / "swapped").symlink_to(secret.parent)
    as_folder = tmp_path / "manifest" / "swapped" / "y.png"
    (secret.parent / "y.png").write_bytes(secret.read_bytes())  # a plain file, behind a link
    for path in (as_file, as_folder):
        with pytest.raises(InputUnavailable, match="symbolic link is on its path"):
            publish_inputs({"input_image": str(path)}, publisher, InputRules())


def test_a_fifo_in_place_of_the_image_does_not_hang(
    loopback: LoopbackInputPublisher, tmp_path: Path
) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(InputUnavailable, match="not a regular file"):
        loopback.publish_file(fifo)


def test_worker_confines_local_inputs_to_its_input_root(tmp_path: Path, image: Path) -> None:
    publisher = RecordingPublisher()
    inside = InputRules(root=image.parent)
    assert publish_inputs({"input_image": str(image)}, publisher, inside)
    elsewhere = InputRules(root=tmp_path / "inputs")
    for value in (str(image), f"{tmp_path}/inputs/../{image.name}"):
        with pytest.raises(InputUnavailable, match=r"outside SEEDQ_INPUT_ROOT|without \. or \.\."):
            publish_inputs({"input_image": value}, publisher, elsewhere)
    assert publisher.calls == [f"file:{image}"]


# --- s3:// inputs, checked again before anything is presigned -----------------------------


@pytest.mark.parametrize(
    ("allow", "uri", "reason"),
    [
        ("", "s3://inputs-bkt/a.png", "SEEDQ_INPUT_S3_ALLOW is empty"),
        ("inputs-bkt", "s3://outputs-bkt/run/clip.mp4", "outside SEEDQ_INPUT_S3_ALLOW"),
        ("inputs-bkt/in", "s3://inputs-bkt/inside/a.png", "outside SEEDQ_INPUT_S3_ALLOW"),
        ("inputs-bkt/in", "s3://inputs-bkt/in/../secret.png", r"\.\. segment"),
        ("inputs-bkt", "s3://user@inputs-bkt/a.png", "outside SEEDQ_INPUT_S3_ALLOW"),
    ],
)
def test_s3_inputs_outside_the_allowlist_are_never_presigned(
    allow: str, uri: str, reason: str
) -> None:
    publisher = RecordingPublisher()
    with pytest.raises(InputUnavailable, match=reason):
        publish_inputs({"tail_image_url": uri}, publisher, InputRules(parse_s3_allow(allow)))
    assert publisher.calls == []


def test_s3_inputs_inside_the_allowlist_are_presigned() -> None:
    publisher = RecordingPublisher()
    rules = InputRules(parse_s3_allow("other-bkt, inputs-bkt/in"))
    publish_inputs({"input_image": "s3://inputs-bkt/in/a/b.png"}, publisher, rules)
    assert publisher.calls == ["s3://inputs-bkt/in/a/b.png"]


def test_the_presign_lifetime_is_a_setting(s3_credentials: dict[str, str]) -> None:
    publisher = make_publisher(load_settings(output="s3://bucket/p"))
    assert isinstance(publisher, S3InputPublisher)
    assert publisher.expires_s == 2 * 3600  # the production default: hours, not a day
    publisher = make_publisher(load_settings(output="s3://bucket/p", input_url_expires_s=900))
    assert isinstance(publisher, S3InputPublisher) and publisher.expires_s == 900


def test_loopback_refuses_unusable_files(loopback: LoopbackInputPublisher, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "folder.png").mkdir()
    huge = tmp_path / "huge.png"
    with huge.open("wb") as out:
        out.truncate(30 * 1024 * 1024 + 1)  # sparse: costs no disk
    for path, reason in [
        (tmp_path / "absent.png", "does not exist"),
        (tmp_path / "notes.txt", "is not .jpg"),
        (tmp_path / "folder.png", "not a regular file"),
        (huge, "30 MB"),
    ]:
        with pytest.raises(InputUnavailable, match=reason):
            loopback.publish_file(path)


def test_loopback_cannot_publish_s3(loopback: LoopbackInputPublisher) -> None:
    with pytest.raises(InputUnavailable, match="need an S3 output store"):
        loopback.publish_s3("s3://bucket/cat.png")


def test_loopback_close_stops_the_server(image: Path) -> None:
    publisher = LoopbackInputPublisher()
    url = publisher.publish_file(image)
    publisher.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=2)
    publisher.close()  # twice is fine


# --- S3 -----------------------------------------------------------------------------------


@pytest.fixture
def s3_publisher(s3_client: S3Client, s3_bucket: str) -> S3InputPublisher:
    return S3InputPublisher(S3Storage(s3_bucket, "run", client=s3_client), expires_s=600)


def test_s3_publisher_uploads_once_under_the_content_hash(
    s3_publisher: S3InputPublisher, s3_client: S3Client, s3_bucket: str, image: Path
) -> None:
    puts: list[str] = []
    s3_client.meta.events.register("before-call.s3.PutObject", lambda **_: puts.append("put"))
    digest = hashlib.sha256(image.read_bytes()).hexdigest()

    first = s3_publisher.publish_file(image)
    second = s3_publisher.publish_file(image)

    assert len(puts) == 1
    assert urlsplit(first).path == urlsplit(second).path == f"/{s3_bucket}/run/_inputs/{digest}.png"
    for url in (first, second):
        response = httpx.get(url, timeout=5)
        assert response.status_code == 200 and response.content == image.read_bytes()
    head = s3_client.head_object(Bucket=s3_bucket, Key=f"run/_inputs/{digest}.png")
    assert head["ContentType"] == "image/png"


def test_s3_publisher_presigns_s3_inputs(
    s3_publisher: S3InputPublisher, s3_client: S3Client, s3_bucket: str
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="in/cat.jpg", Body=b"jpeg bytes")

    url = s3_publisher.publish_s3(f"s3://{s3_bucket}/in/cat.jpg")

    assert httpx.get(url, timeout=5).content == b"jpeg bytes"
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=600" in url


def test_s3_publisher_missing_inputs_fail_the_job(
    s3_publisher: S3InputPublisher, s3_bucket: str, tmp_path: Path
) -> None:
    with pytest.raises(InputUnavailable, match="does not exist"):
        s3_publisher.publish_s3(f"s3://{s3_bucket}/in/none.png")
    with pytest.raises(InputUnavailable, match="not s3://bucket/key"):
        s3_publisher.publish_s3(f"s3://{s3_bucket}")
    with pytest.raises(InputUnavailable, match="does not exist"):
        s3_publisher.publish_file(tmp_path / "none.png")


def test_s3_publisher_outage_is_transient(s3_credentials: dict[str, str], image: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(f"http://127.0.0.1:{port}", connect_timeout_s=1, max_attempts=1)
    publisher = S3InputPublisher(S3Storage("bucket", "", client=client), expires_s=600)
    with pytest.raises(StorageUnavailable):
        publisher.publish_file(image)
    with pytest.raises(StorageUnavailable):
        publisher.publish_s3("s3://bucket/cat.png")


# --- choosing a publisher -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "kind"),
    [
        ({"output": "s3://bucket/p"}, S3InputPublisher),
        ({"output": "out", "provider_url": "http://127.0.0.1:8080"}, LoopbackInputPublisher),
        ({"output": "out", "provider_url": "http://localhost:8080"}, LoopbackInputPublisher),
        ({"output": "out"}, NoInputPublisher),
    ],
)
def test_make_publisher(
    s3_credentials: dict[str, str], settings: dict[str, Any], kind: type[object]
) -> None:
    publisher = make_publisher(load_settings(**settings))
    assert type(publisher) is kind
    if isinstance(publisher, LoopbackInputPublisher):
        publisher.close()


def test_no_publisher_says_what_to_configure(image: Path) -> None:
    with pytest.raises(InputUnavailable, match="SEEDQ_OUTPUT"):
        NoInputPublisher().publish_file(image)
    with pytest.raises(InputUnavailable, match="SEEDQ_OUTPUT"):
        NoInputPublisher().publish_s3("s3://b/k.png")
