"""The output store interface: one protocol, a local-directory and an S3 backend.

Keys are relative, already checked by the producer (``seedq.refs.check_output_key``);
a backend places them under its own prefix. Every write is idempotent by content:
writing a key whose stored object has the same SHA-256 does nothing, so a redelivered
delivery task never uploads twice and never corrupts a finished clip.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

HASH_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredObject:
    """Where an object is, and what it holds."""

    uri: str  # s3://bucket/prefix/key, or an absolute local path
    size: int
    sha256: str | None  # None when the store does not know it


class Storage(Protocol):
    """What the pipeline needs of an output store.

    Every method raises :class:`storage.errors.StorageUnavailable` (transient) when the
    store cannot be reached, refuses access or is full, and
    :class:`storage.errors.KeyRejected` (permanent) when it can never hold that key (too
    long; a file or folder of another key in the way); never a raw ``OSError`` or
    botocore error, and never with credentials in the message.
    """

    def uri(self, key: str) -> str:
        """The object's address for humans and reports (s3://... or a local path)."""
        ...

    def stat(self, key: str) -> StoredObject | None:
        """The stored object, or None when absent."""
        ...

    def put_file(self, key: str, path: Path, *, sha256: str, content_type: str) -> StoredObject:
        """Store a file; a no-op when the same content is already there.

        ``sha256`` must be the file's digest (:func:`sha256_file`): it is what later
        writes compare against, so a wrong one breaks idempotency.
        """
        ...

    def get_file(self, key: str, dest: Path) -> bool:
        """Copy the stored object into the local file ``dest``; False when absent."""
        ...

    def put_json(self, key: str, data: dict[str, Any]) -> StoredObject:
        """Store a small JSON document (a sidecar), replacing any older one."""
        ...

    def get_json(self, key: str) -> dict[str, Any] | None:
        """A JSON document written by put_json, or None."""
        ...

    def share_url(self, key: str, *, expires_s: int) -> str:
        """A URL a browser can open: presigned for S3, file:// for a directory."""
        ...


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks so a large video never sits in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def json_object(blob: bytes) -> dict[str, Any] | None:
    """The JSON object in ``blob``; None for anything else (an unreadable sidecar is
    rewritten, not a reason to stop)."""
    try:
        data = json.loads(blob)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def json_bytes(data: dict[str, Any]) -> bytes:
    """The stored form of a sidecar: sorted keys, so equal documents are equal bytes."""
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()
