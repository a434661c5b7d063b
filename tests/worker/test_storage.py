"""The output stores: one behaviour, checked against the local directory and against a
real S3-protocol server (moto) by the same tests."""

from __future__ import annotations

import errno
import os
import re
import socket
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpx
import pytest
from botocore.exceptions import ClientError

from seedq.errors import ConfigError
from seedq.settings import load_settings
from storage import LocalStorage, Storage, make_storage, sha256_file
from storage import local as local_module
from storage.errors import KeyRejected, StorageUnavailable
from storage.s3 import S3Storage, make_client, parse_s3_output, s3_unavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIB = 1024 * 1024
VIDEO = "video/mp4"


@dataclass
class Backend:
    name: str
    storage: Storage
    writes: Callable[[], int]  # how many times bytes were sent to the store


def _count_s3_writes(client: S3Client) -> Callable[[], int]:
    calls: list[str] = []

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    for operation in ("PutObject", "CreateMultipartUpload"):
        client.meta.events.register(f"before-call.s3.{operation}", record)
    return lambda: len(calls)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        writes: list[Path] = []
        real = local_module._write_atomic

        def counting(target: Path, chunks: Iterable[bytes], root: Path) -> int:
            writes.append(target)
            return real(target, chunks, root)

        monkeypatch.setattr(local_module, "_write_atomic", counting)
        return Backend("local", LocalStorage(tmp_path / "out"), lambda: len(writes))
    client: S3Client = request.getfixturevalue("s3_client")
    bucket: str = request.getfixturevalue("s3_bucket")
    storage = S3Storage(bucket, "runs/one", client=client)
    return Backend("s3", storage, _count_s3_writes(client))


def _file(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _read_shared(url: str) -> bytes:
    if url.startswith("file://"):
        return Path(url2pathname(urlsplit(url).path)).read_bytes()
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    return response.content


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- the shared behaviour ---------------------------------------------------------------


def test_put_then_stat(backend: Backend, tmp_path: Path) -> None:
    store = backend.storage
    source = _file(tmp_path, "clip.mp4", b"video bytes" * 100)
    digest = sha256_file(source)
    assert store.stat("a/b/clip.mp4") is None

    put = store.put_file("a/b/clip.mp4", source, sha256=digest, content_type=VIDEO)

    assert put.size == 1100 and put.sha256 == digest
    assert put.uri == store.uri("a/b/clip.mp4")
    assert store.stat("a/b/clip.mp4") == put
    assert store.uri("a/b/clip.mp4").endswith("a/b/clip.mp4")


def test_same_content_again_is_not_written_again(backend: Backend, tmp_path: Path) -> None:
    source = _file(tmp_path, "clip.mp4", b"x" * 5000)
    digest = sha256_file(source)
    first = backend.storage.put_file("clip.mp4", source, sha256=digest, content_type=VIDEO)
    assert backend.writes() == 1

    again = backend.storage.put_file("clip.mp4", source, sha256=digest, content_type=VIDEO)

    assert again == first
    assert backend.writes() == 1


def test_new_content_replaces_the_old(backend: Backend, tmp_path: Path) -> None:
    store = backend.storage
    old = _file(tmp_path, "old.mp4", b"old")
    new = _file(tmp_path, "new.mp4", b"newer content")
    store.put_file("clip.mp4", old, sha256=sha256_file(old), content_type=VIDEO)

    store.put_file("clip.mp4", new, sha256=sha256_file(new), content_type=VIDEO)

    stored = store.stat("clip.mp4")
    assert stored is not None and stored.sha256 == sha256_file(new) and stored.size == 13
    assert _read_shared(store.share_url("clip.mp4", expires_s=60)) == b"newer content"
    assert backend.writes() == 2


def test_json_round_trip(backend: Backend) -> None:
    store = backend.storage
    assert store.get_json("clip.json") is None
    doc = {"job": "j1", "params": {"duration": 5, "prompt": "café ☕"}, "ok": True}

    put = store.put_json("clip.json", doc)
    assert store.get_json("clip.json") == doc
    assert put.sha256 is not None and put.size > 0

    store.put_json("clip.json", {"job": "j1", "ok": False})
    assert store.get_json("clip.json") == {"job": "j1", "ok": False}


def test_share_url_serves_the_bytes(backend: Backend, tmp_path: Path) -> None:
    data = os.urandom(70_000)
    source = _file(tmp_path, "clip.mp4", data)
    backend.storage.put_file("x/clip.mp4", source, sha256=sha256_file(source), content_type=VIDEO)

    url = backend.storage.share_url("x/clip.mp4", expires_s=3600)

    assert _read_shared(url) == data


def test_get_file_copies_the_stored_bytes(backend: Backend, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    source = _file(tmp_path, "clip.mp4", data)
    backend.storage.put_file("x/clip.mp4", source, sha256=sha256_file(source), content_type=VIDEO)
    dest = tmp_path / "copy.mp4"

    assert backend.storage.get_file("x/clip.mp4", dest) is True
    assert dest.read_bytes() == data
    assert backend.storage.get_file("x/absent.mp4", tmp_path / "none.mp4") is False
    assert not (tmp_path / "none.mp4").exists()


# --- S3 specifics -------------------------------------------------------------------------


def test_s3_multipart_above_threshold_keeps_checksum_and_type(
    s3_client: S3Client, s3_bucket: str, tmp_path: Path
) -> None:
    parts: list[str] = []
    s3_client.meta.events.register(
        "before-call.s3.UploadPart", lambda model, **_: parts.append(model.name)
    )
    store = S3Storage(s3_bucket, "", client=s3_client, multipart_threshold_bytes=5 * MIB)
    data = os.urandom(6 * MIB + 17)
    source = _file(tmp_path, "big.mp4", data)
    digest = sha256_file(source)

    store.put_file("big.mp4", source, sha256=digest, content_type=VIDEO)

    assert len(parts) == 2
    head = s3_client.head_object(Bucket=s3_bucket, Key="big.mp4")
    assert head["Metadata"] == {"sha256": digest}
    assert head["ContentType"] == VIDEO
    assert head["ContentLength"] == len(data)
    assert _read_shared(store.share_url("big.mp4", expires_s=60)) == data


def test_s3_keys_live_under_the_prefix(s3_client: S3Client, s3_bucket: str) -> None:
    store = S3Storage(s3_bucket, "/runs/one/", client=s3_client)
    store.put_json("a/clip.json", {"k": 1})
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == ["runs/one/a/clip.json"]
    assert store.uri("a/clip.json") == f"s3://{s3_bucket}/runs/one/a/clip.json"


def test_s3_from_settings_uses_endpoint_and_env_credentials(
    s3_server: str, s3_bucket: str, tmp_path: Path
) -> None:
    settings = load_settings(output=f"s3://{s3_bucket}/pre", s3_endpoint_url=s3_server)
    store = make_storage(settings)
    assert isinstance(store, S3Storage) and store.prefix == "pre"
    source = _file(tmp_path, "c.mp4", b"abc")
    store.put_file("c.mp4", source, sha256=sha256_file(source), content_type=VIDEO)
    assert store.stat("c.mp4") is not None


def test_s3_missing_bucket_says_an_operator_must_act(s3_client: S3Client, tmp_path: Path) -> None:
    store = S3Storage("seedq-no-such-bucket", "p", client=s3_client)
    source = _file(tmp_path, "c.mp4", b"abc")
    with pytest.raises(StorageUnavailable, match=r"does not exist.*operator"):
        store.put_file("c.mp4", source, sha256=sha256_file(source), content_type=VIDEO)


def test_s3_endpoint_down_is_unavailable_without_secrets(
    s3_credentials: dict[str, str], tmp_path: Path
) -> None:
    client = make_client(f"http://127.0.0.1:{_closed_port()}", connect_timeout_s=1, max_attempts=1)
    store = S3Storage("bucket", "p", client=client)
    source = _file(tmp_path, "c.mp4", b"abc")

    failures: list[StorageUnavailable] = []
    for call in (
        lambda: store.stat("c.mp4"),
        lambda: store.put_file("c.mp4", source, sha256="0" * 64, content_type=VIDEO),
        lambda: store.put_json("c.json", {}),
        lambda: store.get_json("c.json"),
    ):
        with pytest.raises(StorageUnavailable, match="EndpointConnectionError") as info:
            call()
        failures.append(info.value)

    for failure in failures:
        text = "".join(traceback.format_exception(failure))
        for secret in s3_credentials.values():
            if secret != "us-east-1":
                assert secret not in text


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("AccessDenied", 403, "access denied.*operator"),
        ("InvalidAccessKeyId", 403, "access denied.*operator"),
        ("SignatureDoesNotMatch", 403, "access denied"),
        ("NoSuchBucket", 404, "does not exist"),
        ("SlowDown", 503, "failed: SlowDown \\(HTTP 503\\)"),
        ("InternalError", 500, "failed: InternalError \\(HTTP 500\\)"),
    ],
)
def test_s3_error_messages(code: str, status: int, expected: str) -> None:
    response: Any = {
        "Error": {"Code": code, "Message": "Credential=AKIASECRET/20240101"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    error = ClientError(response, "PutObject")
    problem = s3_unavailable("upload", "b", "k.mp4", error)
    assert isinstance(problem, StorageUnavailable)
    assert "s3://b/k.mp4" in str(problem)
    assert "AKIASECRET" not in str(problem)
    assert re.search(expected, str(problem))


def test_s3_key_too_long_error_is_a_rejected_key() -> None:
    error = ClientError({"Error": {"Code": "KeyTooLongError"}}, "PutObject")
    assert isinstance(s3_unavailable("upload", "b", "k.mp4", error), KeyRejected)


# --- keys a store cannot hold (issue 13) --------------------------------------------------


def test_a_key_too_long_for_the_store_is_rejected_for_good(
    backend: Backend, tmp_path: Path
) -> None:
    """A name the store cannot hold is KeyRejected (fail, keep the clip elsewhere), never
    StorageUnavailable: retrying it only burned attempts until the paid clip was lost.
    S3 allows 1024 bytes with the prefix; a directory, 255 per name."""
    key = "a" * 1100 + ".mp4" if backend.name == "s3" else "a" * 300 + ".mp4"
    src = _file(tmp_path, "v.mp4", b"video")
    with pytest.raises(KeyRejected):
        backend.storage.put_file(key, src, sha256=sha256_file(src), content_type=VIDEO)
    with pytest.raises(KeyRejected):
        backend.storage.put_json(key.removesuffix(".mp4") + ".json", {})
    if isinstance(backend.storage, LocalStorage):
        assert [p for p in backend.storage.root.rglob("*") if p.is_file()] == []
    else:
        assert backend.writes() == 0  # refused before any request


def test_local_temp_name_too_long_is_a_rejected_key(tmp_path: Path) -> None:
    """A 250-byte name fits, its ``.<name>.<random>.part`` temporary file does not."""
    src = _file(tmp_path, "v.mp4", b"video")
    store = LocalStorage(tmp_path / "out")
    key = "b" * 246 + ".mp4"
    with pytest.raises(KeyRejected, match="name"):
        store.put_file(key, src, sha256=sha256_file(src), content_type=VIDEO)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("x.mp4", "x.mp4/y.mp4"),  # a file where a folder goes
        ("a.json", "a.json/b.mp4"),  # a sidecar where a folder goes
        ("x.mp4/y.mp4", "x.mp4"),  # a folder where a file goes
        ("d/e.mp4", "d/e.mp4/f/g.mp4"),  # a file where a deeper folder goes
    ],
)
def test_local_key_in_the_way_of_another_is_rejected(
    tmp_path: Path, first: str, second: str
) -> None:
    src = _file(tmp_path, "v.mp4", b"video")
    store = LocalStorage(tmp_path / "out")
    store.put_file(first, src, sha256=sha256_file(src), content_type=VIDEO)
    with pytest.raises(KeyRejected):
        store.put_file(second, src, sha256=sha256_file(src), content_type=VIDEO)
    # Reading such a key is a plain "absent", not an error.
    assert store.stat(second) is None and store.get_json(second) is None
    assert not store.get_file(second, tmp_path / "copy.mp4")


# --- local specifics ----------------------------------------------------------------------


def _fill_disk_after(limit: int) -> Callable[[int, bytes], None]:
    written = 0

    def write(fd: int, data: bytes) -> None:
        nonlocal written
        room = limit - written
        os.write(fd, data[: max(0, room)])
        written += min(len(data), max(0, room))
        if room < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return write


def test_local_full_disk_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStorage(tmp_path / "out")
    source = _file(tmp_path, "clip.mp4", os.urandom(3 * MIB))
    monkeypatch.setattr(local_module, "_write_all", _fill_disk_after(MIB))

    with pytest.raises(StorageUnavailable, match="no space left"):
        store.put_file("a/clip.mp4", source, sha256=sha256_file(source), content_type=VIDEO)

    assert store.stat("a/clip.mp4") is None
    assert list((tmp_path / "out" / "a").iterdir()) == []


def test_local_full_disk_keeps_the_old_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStorage(tmp_path / "out")
    store.put_json("clip.json", {"v": 1})
    monkeypatch.setattr(local_module, "_write_all", _fill_disk_after(3))

    with pytest.raises(StorageUnavailable, match="no space left"):
        store.put_json("clip.json", {"v": 2})

    assert store.get_json("clip.json") == {"v": 1}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip.json"]


def test_local_unwritable_root_is_unavailable(tmp_path: Path) -> None:
    blocker = _file(tmp_path, "not-a-dir", b"")
    store = LocalStorage(blocker / "out")
    with pytest.raises(StorageUnavailable, match="cannot write"):
        store.put_json("clip.json", {})


def test_local_read_only_folder_is_unavailable(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    folder = tmp_path / "out"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(StorageUnavailable, match="permission denied"):
            LocalStorage(folder).put_json("clip.json", {})
    finally:
        folder.chmod(0o700)


def test_local_written_files_are_readable_and_share_url_is_file_uri(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "out")
    store.put_json("clip.json", {})
    assert (tmp_path / "out" / "clip.json").stat().st_mode & 0o777 == 0o644
    assert store.share_url("clip.json", expires_s=1) == (tmp_path / "out/clip.json").as_uri()


@pytest.mark.parametrize("key", ["", "/abs.mp4", "../up.mp4", "a/../../b.mp4", "a//b.mp4"])
def test_local_refuses_keys_outside_the_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="inside the root"):
        LocalStorage(tmp_path).stat(key)


def test_local_unparsable_sidecar_reads_as_absent(tmp_path: Path) -> None:
    (tmp_path / "clip.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    store = LocalStorage(tmp_path)
    assert store.get_json("clip.json") is None
    assert store.get_json("list.json") is None


# --- choosing a store ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "bucket", "prefix"),
    [
        ("s3://bucket", "bucket", ""),
        ("s3://bucket/", "bucket", ""),
        ("s3://my.bucket-1/a/b/", "my.bucket-1", "a/b"),
        ("  s3://bucket//a//b  ", "bucket", "a/b"),
    ],
)
def test_parse_s3_output(output: str, bucket: str, prefix: str) -> None:
    assert parse_s3_output(output) == (bucket, prefix)


@pytest.mark.parametrize(
    "output",
    [
        "s3://",
        "s3:///prefix",
        "s3:/bucket",
        "s3://Upper/x",
        "s3://ab/x",
        "s3://bucket_underscore/x",
        "s3://a..b/x",
        "s3://user:pw@bucket/x",
        "s3://bucket/x?versionId=1",
        "s3://bucket/../x",
    ],
)
def test_bad_s3_output_is_a_config_error(output: str) -> None:
    with pytest.raises(ConfigError):
        make_storage(load_settings(output=output))


def test_make_storage_picks_local_for_a_directory(tmp_path: Path) -> None:
    store = make_storage(load_settings(output=str(tmp_path / "videos")))
    assert isinstance(store, LocalStorage) and store.root == tmp_path / "videos"
