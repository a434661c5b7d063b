"""The output store as a local directory: keys are paths under a root folder.

Writes are atomic: bytes go to a hidden temporary file in the key's own folder, are
fsynced, then ``os.replace`` moves them over the key, so a reader (or a crash) sees the
old object or the new one, never half of one. Idempotency compares the stored file's
SHA-256 with the new one; the digest is computed from the file itself rather than kept
in a side record, so a file replaced by hand can never be mistaken for the old one.

A failure caused by the key's name (too long for the filesystem; a folder where the
file goes, or a file where one of its folders goes) is :class:`KeyRejected`, not
StorageUnavailable: retrying cannot fix it. Reads of such a key answer "absent" when the
object plainly cannot be there (a file in the way of a folder) and KeyRejected when the
name itself cannot exist.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from storage.base import HASH_CHUNK_BYTES, StoredObject, json_bytes, json_object, sha256_file
from storage.errors import KeyRejected, StorageError, StorageUnavailable

TEMP_SUFFIX = ".part"
# Errors of a name, not of the store: ENAMETOOLONG, and a file or folder in the way
# (EISDIR: the key is a folder; ENOTDIR/EEXIST: one of its folders is a file). EILSEQ:
# a filesystem that refuses the name's bytes.
NAME_ERRNOS = frozenset(
    {errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.EILSEQ}
)


class LocalStorage:
    """A :class:`~storage.base.Storage` keeping objects under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """The file a key is stored in; refuses keys that would leave the root."""
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or any(p in ("..", ".", "") for p in key.split("/")):
            raise ValueError(f"storage key must be a relative path inside the root: {key!r}")
        return self.root.joinpath(*parts)

    def uri(self, key: str) -> str:
        return str(self.path(key))

    def stat(self, key: str) -> StoredObject | None:
        path = self.path(key)
        try:
            if not path.is_file():
                return None
            size = path.stat().st_size
            digest = sha256_file(path)
        except (FileNotFoundError, NotADirectoryError):
            return None  # removed between the check and the read, or cannot be there
        except OSError as exc:
            raise _failure("read", path, exc, self.root) from exc
        return StoredObject(uri=str(path), size=size, sha256=digest)

    def put_file(self, key: str, path: Path, *, sha256: str, content_type: str) -> StoredObject:
        existing = self.stat(key)
        if existing is not None and existing.sha256 == sha256:
            return existing
        target = self.path(key)
        try:
            source = path.open("rb")
        except OSError as exc:
            raise StorageUnavailable(
                f"cannot read {path} to store it at {target}: {_reason(exc)}"
            ) from exc
        with source:
            chunks = iter(lambda: source.read(HASH_CHUNK_BYTES), b"")
            size = _write_atomic(target, chunks, self.root)
        return StoredObject(uri=str(target), size=size, sha256=sha256)

    def get_file(self, key: str, dest: Path) -> bool:
        path = self.path(key)
        try:
            shutil.copyfile(path, dest)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False
        except OSError as exc:
            raise _failure("read", path, exc, self.root) from exc
        return True

    def put_json(self, key: str, data: dict[str, Any]) -> StoredObject:
        blob = json_bytes(data)
        target = self.path(key)
        size = _write_atomic(target, [blob], self.root)
        return StoredObject(uri=str(target), size=size, sha256=_sha256_bytes(blob))

    def get_json(self, key: str) -> dict[str, Any] | None:
        """The document, or None when absent. A document that no longer parses (edited
        by hand) also reads as None, so the pipeline rewrites it instead of stalling."""
        path = self.path(key)
        try:
            blob = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _failure("read", path, exc, self.root) from exc
        return json_object(blob)

    def share_url(self, key: str, *, expires_s: int) -> str:
        """A file:// URI; ``expires_s`` is ignored, a local file does not expire."""
        return self.path(key).as_uri()


def _sha256_bytes(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (signals, pipes); loop until all is written."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_atomic(target: Path, chunks: Iterable[bytes], root: Path) -> int:
    """Write ``chunks`` to ``target`` atomically; the number of bytes written.

    On any failure the temporary file is removed and the key keeps its old content (or
    stays absent), then KeyRejected or StorageUnavailable says why.
    """
    temp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX
        )
        size = 0
        try:
            for chunk in chunks:
                _write_all(fd, chunk)
                size += len(chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(temp, 0o644)  # mkstemp makes 0600; outputs are meant to be read
        os.replace(temp, target)
        temp = None
        _fsync_dir(target.parent)
    except OSError as exc:
        raise _failure("write", target, exc, root) from exc
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)
    return size


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; some filesystems cannot fsync a directory."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied or read-only filesystem (an operator must fix it)"
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        return "a file is where one of its folders should be"
    if exc.errno == errno.EISDIR:
        return "a folder is where the file should be"
    return exc.strerror or type(exc).__name__


def _failure(action: str, path: Path, exc: OSError, root: Path) -> StorageError:
    """KeyRejected when the key's name is at fault (see :data:`NAME_ERRNOS`), else
    StorageUnavailable. A root that is not a folder (a file in its place) is the
    operator's to fix, whatever the errno."""
    if exc.errno in NAME_ERRNOS and root.is_dir():
        return KeyRejected(
            f"local output: cannot {action} {path}: {_reason(exc)} "
            "(the key's name cannot be stored there)"
        )
    return StorageUnavailable(f"local output: cannot {action} {path}: {_reason(exc)}")
