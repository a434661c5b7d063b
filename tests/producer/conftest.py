"""Helpers for producer tests: write a manifest (with sample images beside it) and check it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from producer.errors import Problem
from producer.jobs import JobSpec
from producer.manifest import ReadOptions
from producer.plan import CheckResult, check, iter_jobs
from seedq.catalog import ModelCatalog

DEFAULT_MODEL = "bytedance-seedance-2-0-image-to-video"


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.jpg", "c.webp"):
        Image.new("RGB", (64, 48), (200, 100, 50)).save(folder / name)
    return folder


Writer = Callable[[str, str | bytes], Path]


@pytest.fixture
def write(tmp_path: Path, images: Path) -> Writer:
    def _write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        return path

    return _write


def options(**kw: object) -> ReadOptions:
    return ReadOptions(default_model=DEFAULT_MODEL, **kw)  # type: ignore[arg-type]


def run_check(*paths: Path, **kw: object) -> CheckResult:
    return check(list(paths), options(**kw), ModelCatalog(), auto_estimate_s=10)


def jobs_and_problems(*paths: Path, **kw: object) -> tuple[list[JobSpec], list[Problem]]:
    jobs: list[JobSpec] = []
    problems: list[Problem] = []
    for item in iter_jobs(list(paths), options(**kw), ModelCatalog()):
        (jobs if isinstance(item, JobSpec) else problems).append(item)  # type: ignore[arg-type]
    return jobs, problems


@pytest.fixture
def check_one() -> Callable[..., CheckResult]:
    return run_check


@pytest.fixture
def parse() -> Callable[..., tuple[list[JobSpec], list[Problem]]]:
    return jobs_and_problems
