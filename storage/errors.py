"""Errors of the output stores, split by what happens next.

SeedqError
└── StorageError
    ├── StorageUnavailable   (TransientError) the store did not answer, refused, or is full
    └── KeyRejected          (JobFailed) the store refuses this key for good: the name is
                             too long, or a file or folder of another key is in its way

A KeyRejected never clears by waiting: trying the same key again fails the same way, so
whoever holds bytes for it (a paid clip) must keep them under another key.
"""

from __future__ import annotations

from seedq.errors import JobFailed, SeedqError, TransientError


class StorageError(SeedqError):
    """Base of every output-store error."""


class StorageUnavailable(StorageError, TransientError):
    """The output store failed (unreachable, refused, or out of space)."""


class KeyRejected(StorageError, JobFailed):
    """The store cannot hold an object under this key (name too long, or it collides
    with a folder or file of another key); another key would work."""
