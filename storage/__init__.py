"""Output stores: the :class:`Storage` protocol, a local directory and S3, chosen by
``settings.output`` (``s3://bucket/prefix`` or a directory)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from storage.base import Storage, StoredObject, sha256_file
from storage.local import LocalStorage

if TYPE_CHECKING:
    from seedq.settings import Settings

__all__ = ["LocalStorage", "Storage", "StoredObject", "make_storage", "sha256_file"]


def make_storage(settings: Settings) -> Storage:
    """The store ``settings.output`` names; ConfigError for a malformed s3:// URI.

    Building an S3 store makes no request: a wrong endpoint or missing bucket shows up
    as StorageUnavailable on first use.
    """
    # "s3:/x" or "S3://x" is a typo for S3, not a local folder named "s3:".
    if settings.output.strip().lower().startswith("s3:"):
        # Imported here so a local-only worker never loads boto3.
        from storage.s3 import S3Storage

        return S3Storage.from_settings(settings)
    return LocalStorage(settings.output_dir)
