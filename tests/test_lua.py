"""The Lua scripts of the Redis gateways: shipped in the wheel and found from an
installed package, every key passed in KEYS (none built by concatenation), and the
run statuses and call results they act on taken from the enums, not retyped."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from seedq.contract import RunStatus
from seedq.scripts import load
from worker.call_results import CallResult

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("seedq", "worker")
SCRIPTS = sorted((p, f.stem) for p in PACKAGES for f in (REPO / p / "lua").glob("*.lua"))


def code_of(text: str) -> str:
    """The script without its comments."""
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())


def test_each_package_has_its_scripts() -> None:
    assert {"admit", "requeue", "extend", "expired", "stalled", "expire_all"} <= {
        name for package, name in SCRIPTS if package == "seedq"
    }
    assert {"throttle", "swap_run_status"} <= {
        name for package, name in SCRIPTS if package == "worker"
    }


# register.lua builds one key: a pending job's owner's waiting queue, from a template
# Python passes, because the owner is read in the same atomic step (see the script).
BUILDS_A_KEY = {("seedq", "register")}
# Scripts whose quoted words are job states and register's decisions ('cancelled',
# 'active'), never a run's status: they do not read or write one.
JOB_LEVEL = {("seedq", "register"), ("seedq", "transition")}


@pytest.mark.parametrize(("package", "name"), SCRIPTS)
def test_no_key_is_built_inside_a_script(package: str, name: str) -> None:
    has_concatenation = ".." in code_of(load(name, package))
    assert has_concatenation == ((package, name) in BUILDS_A_KEY), "a key built inside?"


@pytest.mark.parametrize(("package", "name"), [s for s in SCRIPTS if s not in JOB_LEVEL])
def test_no_run_status_is_spelled_in_a_script(package: str, name: str) -> None:
    """Run statuses reach the scripts as ARGV (seedq.contract.RunStatus)."""
    literals = set(re.findall(r"'([a-z_]+)'", code_of(load(name, package))))
    assert not literals & {s.value for s in RunStatus}


def test_the_throttle_script_reports_every_call_result() -> None:
    code = code_of(load("throttle", "worker"))
    for result in CallResult:
        assert f"op == '{result.value}'" in code, result


def image_sources(into: Path) -> Path:
    """A copy of what the Dockerfile copies to build the image (no stale build/ folder)."""
    into.mkdir()
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, into / name)
    for pattern in config["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        shutil.copytree(
            REPO / package, into / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return into


@pytest.mark.slow
def test_scripts_are_found_from_the_installed_wheel(tmp_path: Path) -> None:
    sources = image_sources(tmp_path / "src")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(sources),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("seedq-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import seedq.scripts as s;"
        "assert s.__file__.startswith(sys.argv[1]), s.__file__;"
        "[s.load(n, p) for p, n in zip(sys.argv[2::2], sys.argv[3::2])]"
    )
    names = [part for pair in SCRIPTS for part in pair]
    found = subprocess.run(
        [sys.executable, "-c", probe, str(site), *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
