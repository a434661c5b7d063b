"""Property tests: whatever bytes or rows come in, the producer answers with its own
problems (or valid jobs), never with any other exception."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer.catalog import ModelCatalog
from producer.errors import Problem
from producer.jobs import JobSpec
from producer.manifest import ReadOptions
from producer.plan import iter_jobs

OPTS = ReadOptions(default_model="bytedance-seedance-2-0-image-to-video")
FIELDS = [
    "prompt",
    "input_image",
    "resolution",
    "duration",
    "aspect_ratio",
    "generate_audio",
    "watermark",
    "id",
    "output",
    "priority",
    "tail_image_url",
    "sku",
]


def run(path: Path) -> list[JobSpec | Problem]:
    items = list(iter_jobs([path], OPTS, ModelCatalog()))
    assert all(isinstance(i, JobSpec | Problem) for i in items)
    return items


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".csv", ".yaml", ".yml"]))
def test_arbitrary_bytes_never_crash(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"m{suffix}"
        path.write_bytes(data)
        run(path)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=600), suffix=st.sampled_from([".csv", ".yaml"]))
def test_arbitrary_text_never_crashes(text: str, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"m{suffix}"
        path.write_text(text, encoding="utf-8")
        run(path)


cell = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "auto",
            "yes",
            "NO",
            "1080p",
            "16:9",
            "-1",
            "4",
            "99",
            "{sku}",
            "../x",
            "http://127.0.0.1/a.png",
            "s3://b/k.png",
            "a.png",
            "{x.y}",
        ]
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    header=st.lists(st.sampled_from(FIELDS), min_size=1, max_size=8, unique=True),
    rows=st.lists(st.lists(cell, max_size=9), max_size=6),
)
def test_arbitrary_rows_never_crash(header: list[str], rows: list[list[str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.csv"
        path.write_text(buf.getvalue(), encoding="utf-8")
        (Path(folder) / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        for item in run(path):
            if isinstance(item, Problem):
                assert item.line >= 0 and item.field and item.message
