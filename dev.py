#!/usr/bin/env python3
"""The one tooling entry: ``python3 dev.py run|test|lint|bench`` (``make`` calls it too).

Needs only Python 3.11+. It makes ``.venv`` beside this file, installs into it every
dependency at the version and hashes of ``requirements-dev.lock``, then the project
itself without dependencies (again only when pyproject.toml or the lock changed), and for
the tests makes sure a Redis server listens on 127.0.0.1:6379, starting (and if need be
installing) one when none does. README.md, "Development", says how to refresh the lock.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".seedq-installed"
# The pinned, hashed dependencies of the project and its tools (the image uses
# requirements.lock, the same pins without the development tools).
LOCK = ROOT / "requirements-dev.lock"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def say(msg: str) -> None:
    print(f"[dev] {msg}", flush=True)


def run(cmd: list[str]) -> int:
    return subprocess.call(cmd, cwd=ROOT)


def ensure_venv() -> None:
    if sys.version_info < (3, 11):
        sys.exit("seedq needs Python 3.11 or newer")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(LOCK.read_bytes())
    want = digest.hexdigest()
    if STAMP.exists() and STAMP.read_text() == want and PY.exists():
        return
    if not PY.exists():
        say(f"creating {VENV.relative_to(ROOT)}")
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    say("installing seedq and its dependencies (first run only; about a minute)")
    base = [str(PY), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    steps = (
        [*base, "--upgrade", "pip"],
        # Exactly the locked versions, each checked against its hashes: nothing the
        # resolver picks today that it did not pick when the lock was made.
        [*base, "--require-hashes", "--requirement", str(LOCK)],
        [*base, "--no-deps", "--editable", "."],
    )
    if any(run(step) != 0 for step in steps):
        sys.exit("pip install failed; see the messages above")
    STAMP.write_text(want)


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def ensure_redis() -> None:
    if listening(REDIS_HOST, REDIS_PORT):
        return
    server = shutil.which("redis-server")
    if server is None and shutil.which("apt-get") and os.geteuid() == 0:
        say("no redis-server found: installing it with apt-get")
        run(["apt-get", "update", "-qq"])
        run(["apt-get", "install", "-y", "-qq", "redis-server"])
        server = shutil.which("redis-server")
    if server is None:
        say("no Redis on 127.0.0.1:6379 and none installable: Redis-backed tests will skip")
        return
    say("starting redis-server on 127.0.0.1:6379")
    subprocess.call(
        [
            server,
            "--daemonize",
            "yes",
            "--bind",
            REDIS_HOST,
            "--port",
            str(REDIS_PORT),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/tmp",
        ]
    )
    for _ in range(50):
        if listening(REDIS_HOST, REDIS_PORT):
            return
        time.sleep(0.1)
    say("redis-server did not come up; Redis-backed tests will skip")


def packages() -> list[str]:
    """The project's packages, as pyproject.toml lists them for the build."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]


def lint() -> int:
    say("ruff, mypy, the import layers and bandit")
    rc = run([str(PY), "-m", "ruff", "check", "--quiet", "."])
    rc |= run([str(PY), "-m", "ruff", "format", "--check", "--quiet", "."])
    rc |= run([str(PY), "-m", "mypy"])
    rc |= run([str(BIN / "lint-imports"), "--no-cache"])
    bandit = [str(PY), "-m", "bandit", "-c", "pyproject.toml", "--quiet", "--recursive"]
    return rc | run([*bandit, *packages()])


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "test", "lint", "bench", "install"}:
        print(__doc__)
        print("usage: python3 dev.py run [MANIFEST...] | test [PYTEST ARGS] | lint | bench")
        return 2
    cmd, rest = argv[0], argv[1:]
    ensure_venv()
    if cmd == "install":
        return 0
    if cmd == "run":
        # The main job is the demo, free even where OXEN_API_KEY is set (.env of compose);
        # its embedded workers run with the fetch guard off, as only the demo may.
        return run([str(BIN / "seedq"), "run", "--demo", *(rest or ["manifests/example.yaml"])])
    if cmd == "test":
        ensure_redis()
        if shutil.which("chromium") is None and shutil.which("apt-get") and os.geteuid() == 0:
            say("no chromium found (the HTML report's browser test): installing it")
            run(["apt-get", "update", "-qq"])
            run(["apt-get", "install", "-y", "-qq", "chromium"])
        # In parallel unless the arguments choose (-n0 or -p no:xdist: one process); each
        # worker flushes a Redis database of its own (tests/conftest.py).
        chosen = any(a.startswith(("-n", "--numprocesses", "--dist")) or "xdist" in a for a in rest)
        parallel = [] if chosen else ["-n", "3", "--dist", "loadgroup"]
        rc = run([str(PY), "-m", "pytest", *parallel, *rest])
        # Lint after the tests, so a style slip never hides a test result.
        return rc or lint()
    if cmd == "lint":
        return lint()
    ensure_redis()
    rc = 0
    for script in sorted((ROOT / "bench").glob("*.py")):
        rc |= run([str(PY), str(script), *rest])
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
