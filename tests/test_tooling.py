"""The tooling's own promises. The locks pin every dependency pyproject.toml names, at a
version its specifier accepts, with hashes, the same version in both; dev.py and the
image install from them. And the shipped code passes bandit."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
RUNTIME_LOCK, DEV_LOCK = "requirements.lock", "requirements-dev.lock"
# `name==version \` opens each entry of a pip-compile lock; its hashes follow.
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", re.MULTILINE)
REFRESH = "out of date: refresh the locks (README.md, Development)"


def lock_text(lock: str) -> str:
    return (REPO / lock).read_text(encoding="utf-8")


def pins(lock: str) -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in PIN.findall(lock_text(lock))}


def declared(*, dev: bool) -> list[Requirement]:
    project = PYPROJECT["project"]
    names = list(project["dependencies"])
    if dev:
        names += project["optional-dependencies"]["dev"]
    return [Requirement(name) for name in names]


@pytest.mark.parametrize(("lock", "dev"), [(RUNTIME_LOCK, False), (DEV_LOCK, True)])
def test_the_lock_pins_every_declared_dependency(lock: str, dev: bool) -> None:
    pinned = pins(lock)
    for requirement in declared(dev=dev):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{lock} does not pin {requirement.name}: {REFRESH}"
        version = pinned[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} pins {name}=={version}, outside {requirement}: {REFRESH}"
        )


def test_the_lock_check_catches_a_missing_or_outdated_pin() -> None:
    pinned = pins(RUNTIME_LOCK)
    assert "no-such-dependency" not in pinned
    assert not Requirement("celery>=99").specifier.contains(pinned["celery"])


def test_both_locks_pin_the_same_versions() -> None:
    runtime, dev = pins(RUNTIME_LOCK), pins(DEV_LOCK)
    assert {name: (v, dev.get(name)) for name, v in runtime.items() if dev.get(name) != v} == {}


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK])
def test_every_pin_carries_its_hashes(lock: str) -> None:
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock_text(lock))
    for entry in entries:
        if PIN.match(entry):
            assert "--hash=sha256:" in entry, entry.splitlines()[0]
    assert "-e " not in lock_text(lock) and "file://" not in lock_text(lock)


def test_dev_py_and_the_image_install_from_the_locks() -> None:
    dev_py = (REPO / "dev.py").read_text(encoding="utf-8")
    assert f'LOCK = ROOT / "{DEV_LOCK}"' in dev_py
    assert '"--require-hashes", "--requirement", str(LOCK)' in dev_py
    assert '"--no-deps", "--editable", "."' in dev_py
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert f"RUN pip install --require-hashes --requirement {RUNTIME_LOCK}\n" in dockerfile
    assert "RUN pip install --no-deps . " in dockerfile


def test_the_shipped_code_passes_bandit() -> None:
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    argv = ["-c", "pyproject.toml", "--quiet", "--recursive", *(p.rstrip("*") for p in include)]
    done = subprocess.run(
        [sys.executable, "-m", "bandit", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
