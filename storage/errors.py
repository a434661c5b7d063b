"""Errors of the output stores.

SeedqError
└── StorageError
    └── StorageUnavailable   (TransientError) the store did not answer, refused, or is full
"""

from __future__ import annotations

from seedq.errors import SeedqError, TransientError


class StorageError(SeedqError):
    """Base of every output-store error."""


class StorageUnavailable(StorageError, TransientError):
    """The output store failed (unreachable, refused, or out of space)."""
