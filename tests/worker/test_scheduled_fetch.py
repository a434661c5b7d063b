"""Fetching a scheduled run's manifest from S3 (moto's server), with a size cap."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from worker.scheduled import FetchError, fetch_s3

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ROWS = "prompt,input_image\np,images/a.png\n"


def test_s3_fetch_with_a_size_cap(s3_client: S3Client, s3_bucket: str, tmp_path: Path) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="m/night.csv", Body=ROWS.encode())
    fetch_s3(f"s3://{s3_bucket}/m/night.csv", tmp_path / "a.csv", 10_000, s3_client)
    assert (tmp_path / "a.csv").read_text() == ROWS
    with pytest.raises(FetchError, match="larger than 10 bytes"):
        fetch_s3(f"s3://{s3_bucket}/m/night.csv", tmp_path / "b.csv", 10, s3_client)
    with pytest.raises(FetchError, match=r"m/missing\.csv"):
        fetch_s3(f"s3://{s3_bucket}/m/missing.csv", tmp_path / "c.csv", 10_000, s3_client)
