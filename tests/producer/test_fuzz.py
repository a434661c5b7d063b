"""Property tests: whatever bytes or rows come in, the producer answers with its own
problems (or valid jobs), never with any other exception."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from producer.errors import Problem
from producer.jobs import JobSpec
from producer.manifest import ReadOptions
from producer.plan import iter_jobs
from seedq.catalog import ModelCatalog

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


# --- YAML manifests of the right shape with anything in it, and pathological files ------

yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | cell,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
yaml_jobs = st.lists(
    st.dictionaries(st.sampled_from(FIELDS), yaml_values, max_size=8) | yaml_values, max_size=5
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    top=st.fixed_dictionaries(
        {"jobs": yaml_jobs | yaml_values},
        optional={
            "defaults": st.dictionaries(st.sampled_from(FIELDS), yaml_values) | yaml_values,
            "model": yaml_values,
            "output": cell | yaml_values,
            "name": yaml_values,
        },
    )
    | yaml_values
)
# Found by this test under pydantic 2.14: a null priority raised a TypeError.
@example(top={"jobs": [{"prompt": None, "priority": None}]})
def test_arbitrary_yaml_structure_never_crashes(top: object) -> None:
    """Missing fields, wrong types (lists, maps, nulls, numbers where text goes), extra
    keys: every row is a job or a problem."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.yaml"
        path.write_text(yaml.safe_dump(top, allow_unicode=True), encoding="utf-8")
        (Path(folder) / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        run(path)


PATHOLOGICAL = {
    "deep.yaml": b"jobs: " + b"[" * 50_000 + b"]" * 50_000,
    "deep-maps.yaml": b"jobs:\n  - " + b"{a: " * 20_000 + b"1" + b"}" * 20_000,
    "unclosed.yaml": b"jobs: " + b"[" * 200_000,
    "huge-cell.csv": b"prompt,input_image\n" + b"x" * 3_000_000 + b",a.png\n",
    "huge-quoted.csv": b'prompt,input_image\n"' + b"x" * 3_000_000 + b"\n",
    "huge-line.yaml": b"jobs:\n  - prompt: " + b"y" * 3_000_000 + b"\n    input_image: a.png\n",
    "many-columns.csv": b",".join(b"c%d" % i for i in range(100_000)) + b"\n" + b"," * 99_999,
    "nul.csv": b"prompt,input_image\nhello\x00world,a.png\n",
    "bom-utf16.csv": "prompt,input_image\nhi,a.png\n".encode("utf-16"),
    "tags.yaml": b"jobs:\n  - !!python/object/apply:os.system ['true']\n",
    "binary-tag.yaml": b"jobs:\n  - prompt: !!binary aGVsbG8=\n    input_image: a.png\n",
    "big-int.yaml": b"jobs:\n  - prompt: p\n    input_image: a.png\n    duration: 1" + b"0" * 5000,
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_manifests_are_problems(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(PATHOLOGICAL[name])
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    items = run(path)
    assert any(isinstance(i, Problem) for i in items), items


def test_manifest_over_the_size_cap_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(b"prompt,input_image\n" + b"p,a.png\n" * 20_000)
    opts = ReadOptions(default_model=OPTS.default_model, max_manifest_bytes=100_000)
    items = list(iter_jobs([path], opts, ModelCatalog()))
    assert len(items) == 1 and isinstance(items[0], Problem), items[:3]
