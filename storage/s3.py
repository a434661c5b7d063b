"""The output store on S3 (or anything speaking its protocol: MinIO, moto).

Each object carries its SHA-256 in user metadata (``x-amz-meta-sha256``); a write whose
digest matches the stored one is skipped, which is what makes a redelivered delivery
task free. Two deliveries racing on one key upload the same bytes, so whichever lands
last leaves the same object.

The credentials need s3:GetObject, s3:PutObject and s3:ListBucket: without ListBucket,
S3 answers HEAD of a missing key with 403 instead of 404, which reads as access denied.

Every botocore/boto3 failure becomes :class:`~storage.errors.StorageUnavailable` whose
message names the operation, the object and the S3 error code, never the request's
headers or credentials; a key S3 cannot hold (longer than :data:`MAX_OBJECT_KEY_BYTES`
with the prefix, checked here before any request since some S3-protocol servers do not)
is :class:`~storage.errors.KeyRejected`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from seedq.errors import ConfigError
from storage.base import StoredObject, json_bytes, json_object
from storage.errors import KeyRejected, StorageError, StorageUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from seedq.settings import Settings

MIB = 1024 * 1024
MULTIPART_THRESHOLD_BYTES = 8 * MIB
MULTIPART_CHUNK_BYTES = 8 * MIB
MAX_PRESIGN_S = 7 * 24 * 3600  # SigV4 presigned URLs cannot live longer
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
MAX_ATTEMPTS = 5
SHA256_META = "sha256"
MAX_OBJECT_KEY_BYTES = 1024  # S3's limit, in UTF-8 bytes, prefix included
KEY_REJECTED_CODES = frozenset({"KeyTooLongError"})
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "403",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AllAccessDisabled",
        "AccountProblem",
    }
)
# Bucket names as S3 accepts them (lowercase, digits, dots, hyphens; 3-63 characters).
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_s3_output(output: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix")``; ConfigError if malformed."""
    parts = urlsplit(output.strip())
    if parts.scheme != "s3":
        raise ConfigError(f"output {output!r} is not an s3:// URI")
    if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
        raise ConfigError(f"output {output!r} must be s3://bucket/prefix, nothing more")
    bucket = parts.netloc
    if not BUCKET_NAME.match(bucket) or ".." in bucket:
        raise ConfigError(f"output {output!r}: {bucket!r} is not a valid S3 bucket name")
    segments = [s for s in parts.path.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise ConfigError(f"output {output!r}: prefix must not contain . or .. segments")
    return bucket, "/".join(segments)


def make_client(
    endpoint_url: str | None,
    *,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    read_timeout_s: float = READ_TIMEOUT_S,
    max_attempts: int = MAX_ATTEMPTS,
) -> S3Client:
    """An S3 client with bounded timeouts and botocore's standard retry mode.

    Credentials come from boto3's usual chain (environment, profile, instance role),
    never from job data. A private endpoint (MinIO, moto) gets path-style addressing,
    since its host name cannot carry a bucket.
    """
    config = Config(
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"mode": "standard", "max_attempts": max_attempts},
        signature_version="s3v4",
        s3={"addressing_style": "path" if endpoint_url else "auto"},
    )
    # A session per client: boto3's default session is not safe to share across threads.
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, config=config)


class S3Storage:
    """A :class:`~storage.base.Storage` keeping objects under ``s3://bucket/prefix``."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        client: S3Client,
        multipart_threshold_bytes: int = MULTIPART_THRESHOLD_BYTES,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.transfer_config = TransferConfig(
            multipart_threshold=multipart_threshold_bytes,
            multipart_chunksize=max(5 * MIB, min(MULTIPART_CHUNK_BYTES, multipart_threshold_bytes)),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        bucket, prefix = parse_s3_output(settings.output)
        return cls(bucket, prefix, client=make_client(settings.s3_endpoint_url))

    def __repr__(self) -> str:
        return f"S3Storage({self.uri('')!r})"

    def object_key(self, key: str) -> str:
        """The full S3 key of ``key``; KeyRejected when S3 cannot hold it."""
        full = self._joined(key)
        size = len(full.encode("utf-8"))
        if size > MAX_OBJECT_KEY_BYTES:
            raise KeyRejected(
                f"S3 key {_shown(self.uri(key))} is {size} bytes with its prefix; "
                f"S3 allows at most {MAX_OBJECT_KEY_BYTES}"
            )
        return full

    def _joined(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._joined(key)}"

    def stat(self, key: str) -> StoredObject | None:
        return self.stat_object(self.bucket, self.object_key(key))

    def stat_object(self, bucket: str, object_key: str) -> StoredObject | None:
        """HEAD any object (also outside this store's prefix); None when absent."""
        try:
            head = self.client.head_object(Bucket=bucket, Key=object_key)
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            if _error_code(exc) in NOT_FOUND_CODES:
                return None
            raise s3_unavailable("HEAD", bucket, object_key, exc) from exc
        return StoredObject(
            uri=f"s3://{bucket}/{object_key}",
            size=head["ContentLength"],
            sha256=head.get("Metadata", {}).get(SHA256_META),
        )

    def put_file(self, key: str, path: Path, *, sha256: str, content_type: str) -> StoredObject:
        existing = self.stat(key)
        if existing is not None and existing.sha256 == sha256:
            return existing
        object_key = self.object_key(key)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise StorageUnavailable(
                f"cannot read {path} to upload it to {self.uri(key)}: {exc.strerror}"
            ) from exc
        try:
            # upload_file switches to a multipart upload above the threshold, and
            # aborts the upload on failure so no parts are left billed.
            self.client.upload_file(
                str(path),
                self.bucket,
                object_key,
                ExtraArgs={"Metadata": {SHA256_META: sha256}, "ContentType": content_type},
                Config=self.transfer_config,
            )
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            raise s3_unavailable("upload", self.bucket, object_key, exc) from exc
        except OSError as exc:  # the local file vanished or became unreadable mid-upload
            raise StorageUnavailable(
                f"cannot read {path} to upload it to {self.uri(key)}: {exc.strerror}"
            ) from exc
        return StoredObject(uri=self.uri(key), size=size, sha256=sha256)

    def get_file(self, key: str, dest: Path) -> bool:
        object_key = self.object_key(key)
        try:
            self.client.download_file(
                self.bucket, object_key, str(dest), Config=self.transfer_config
            )
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            if _error_code(exc) in NOT_FOUND_CODES:
                return False
            raise s3_unavailable("download", self.bucket, object_key, exc) from exc
        except OSError as exc:  # the local destination cannot be written
            raise StorageUnavailable(
                f"cannot write {dest} to download {self.uri(key)}: {exc.strerror}"
            ) from exc
        return True

    def put_json(self, key: str, data: dict[str, Any]) -> StoredObject:
        blob = json_bytes(data)
        digest = hashlib.sha256(blob).hexdigest()
        object_key = self.object_key(key)
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=object_key,
                Body=blob,
                ContentType="application/json",
                Metadata={SHA256_META: digest},
            )
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            raise s3_unavailable("PUT", self.bucket, object_key, exc) from exc
        return StoredObject(uri=self.uri(key), size=len(blob), sha256=digest)

    def get_json(self, key: str) -> dict[str, Any] | None:
        """The document, or None when absent or no longer a JSON object."""
        object_key = self.object_key(key)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=object_key)["Body"]
            with body:
                blob = body.read()
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            if _error_code(exc) in NOT_FOUND_CODES:
                return None
            raise s3_unavailable("GET", self.bucket, object_key, exc) from exc
        return json_object(blob)

    def share_url(self, key: str, *, expires_s: int) -> str:
        return self.presign(self.bucket, self.object_key(key), expires_s=expires_s)

    def presign(self, bucket: str, object_key: str, *, expires_s: int) -> str:
        """A presigned GET URL; signing is local, no request is made."""
        if not 1 <= expires_s <= MAX_PRESIGN_S:
            raise ValueError(f"expires_s must be 1..{MAX_PRESIGN_S}, got {expires_s}")
        try:
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": object_key}, ExpiresIn=expires_s
            )
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            raise s3_unavailable("presign", bucket, object_key, exc) from exc


def _error_chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes: boto3 wraps client errors (S3UploadFailedError)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _error_code(exc: BaseException) -> str | None:
    for item in _error_chain(exc):
        if isinstance(item, ClientError):
            return str(item.response.get("Error", {}).get("Code", "")) or None
    return None


def _status(exc: BaseException) -> int | None:
    for item in _error_chain(exc):
        if isinstance(item, ClientError):
            status = item.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return int(status) if status is not None else None
    return None


def _shown(uri: str, max_chars: int = 120) -> str:
    """A URI short enough for one line of a message (a rejected key may be 1 KB)."""
    return uri if len(uri) <= max_chars else uri[: max_chars - 3] + "..."


def _safe_endpoint(url: str) -> str:
    """An endpoint URL without user info or query, which could carry secrets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def s3_unavailable(action: str, bucket: str, object_key: str, exc: BaseException) -> StorageError:
    """The StorageUnavailable (KeyRejected for a key S3 refuses) standing for a boto
    error; its message is built from the error code and class only, so no request detail
    (headers, signature) can leak."""
    where = f"s3://{bucket}/{object_key}"
    code = _error_code(exc)
    if code in KEY_REJECTED_CODES:
        return KeyRejected(f"S3 {action} {_shown(where)}: the key is refused ({code})")
    if code == "NoSuchBucket":
        return StorageUnavailable(
            f"S3 {action} {where}: bucket {bucket!r} does not exist "
            "(an operator must create it or fix SEEDQ_OUTPUT)"
        )
    if code in ACCESS_CODES:
        return StorageUnavailable(
            f"S3 {action} {where}: access denied ({code}); an operator must fix the "
            "credentials or the bucket policy"
        )
    if code is not None:
        status = _status(exc)
        return StorageUnavailable(f"S3 {action} {where} failed: {code} (HTTP {status})")
    for item in _error_chain(exc):
        endpoint = getattr(item, "kwargs", {}).get("endpoint_url")
        if isinstance(endpoint, str):
            return StorageUnavailable(
                f"S3 {action} {where} failed: {type(item).__name__} "
                f"(endpoint {_safe_endpoint(endpoint)})"
            )
    return StorageUnavailable(f"S3 {action} {where} failed: {type(exc).__name__}")
