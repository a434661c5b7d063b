"""Reading a local input image without following a symbolic link anywhere on its path.

The producer keeps a local image as its real path: every ``..`` and symlink resolved,
checked to lie inside the manifest's folder or ``SEEDQ_INPUT_ROOT``
(:func:`seedq.refs.parse_image_ref`). Between that check and the publish, whoever can
write in that folder could swap the file, or a folder on its way, for a symlink to a
dotenv file. So here the path is opened from ``/`` one component at a time with
``O_NOFOLLOW`` (any symlink fails the open: the path had none when it was checked),
judged on the open descriptor (a regular file, an image suffix, at most 30 MB), and
copied from that descriptor into a file of the publisher's own: what is published is
the bytes that were checked, never the name opened a second time.

Every refusal is :class:`~worker.errors.InputUnavailable`: the job fails with the reason.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

from seedq.refs import IMAGE_SUFFIXES, INPUT_ROOT_SETTING, MAX_IMAGE_BYTES
from worker.errors import InputUnavailable

COPY_CHUNK_BYTES = 64 * 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK: opening a FIFO put in the image's place must not hang the worker.
_FILE_FLAGS = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0)
_DIR_FLAGS = os.O_RDONLY | _NOFOLLOW | _DIRECTORY | _CLOEXEC
# Walking with directory descriptors needs openat(2) and both flags (POSIX); elsewhere
# the real path is compared before a plain open, which leaves a race but no symlink.
CAN_WALK = os.open in os.supports_dir_fd and bool(_NOFOLLOW and _DIRECTORY)
_LINK_ERRNOS = frozenset({errno.ELOOP, errno.ENOTDIR, getattr(errno, "EMLINK", errno.ELOOP)})


def check_inside(path: Path, root: Path | None) -> None:
    """An absolute path with no ``.``/``..``, inside ``root`` when one is set."""
    if not path.is_absolute() or any(part in (".", "..") for part in path.parts):
        raise InputUnavailable(f"input image {path} is not an absolute path without . or ..")
    if root is not None and not path.is_relative_to(root.resolve()):
        raise InputUnavailable(f"input image {path} is outside {INPUT_ROOT_SETTING} ({root})")


def open_image(path: Path) -> int:
    """A read descriptor of the local image at ``path``, opened following no symlink."""
    check_inside(path, None)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputUnavailable(f"input image {path} is not .jpg, .jpeg, .png or .webp")
    try:
        fd = _walk(path) if CAN_WALK else _open_real(path)
    except OSError as exc:
        raise _refusal(path, exc) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputUnavailable(f"input image {path} is not a regular file")
        if info.st_size > MAX_IMAGE_BYTES:
            raise InputUnavailable(
                f"input image {path} is {info.st_size} bytes; the provider takes 30 MB"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _walk(path: Path) -> int:
    parts = path.parts
    fd = os.open(parts[0], _DIR_FLAGS)
    try:
        for part in parts[1:-1]:
            inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)


def _open_real(path: Path) -> int:
    if os.path.realpath(path) != str(path):
        raise OSError(errno.ELOOP, "a symbolic link is on its path")
    return os.open(path, _FILE_FLAGS | getattr(os, "O_BINARY", 0))


def _refusal(path: Path, exc: OSError) -> InputUnavailable:
    if exc.errno in _LINK_ERRNOS:
        return InputUnavailable(
            f"input image {path}: a symbolic link is on its path now; it had none when the "
            "manifest was checked, so it is not read"
        )
    if exc.errno == errno.ENOENT:
        return InputUnavailable(f"input image {path} does not exist")
    return InputUnavailable(f"input image {path} cannot be read: {exc.strerror}")


def copy_image(path: Path, dest: Path) -> str:
    """Copy the image at ``path`` (opened by :func:`open_image`) into the new file
    ``dest``; the hex SHA-256 of exactly the bytes copied."""
    digest = hashlib.sha256()
    size = 0
    fd = open_image(path)
    with os.fdopen(fd, "rb") as source, dest.open("xb") as target:
        while chunk := _read(source, path):
            size += len(chunk)
            if size > MAX_IMAGE_BYTES:  # it grew after the check
                raise InputUnavailable(f"input image {path} is over 30 MB")
            digest.update(chunk)
            target.write(chunk)
    return digest.hexdigest()


def _read(source: BinaryIO, path: Path) -> bytes:
    try:
        return source.read(COPY_CHUNK_BYTES)
    except OSError as exc:
        raise InputUnavailable(f"input image {path} cannot be read: {exc.strerror}") from None
