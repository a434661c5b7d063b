"""A process of the pipeline started without a setting it cannot work without exits at
once with one line naming it: ``celery -A worker worker`` and ``beat``, and ``seedq
events``, each run for real in a subprocess with an empty environment (no ``.env``:
the working directory is a fresh one). So does every process, Flower and the commands
too, given a placeholder of .env.example (or nothing) as a secret. And the broker URL
has one source."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from seedq.errors import ConfigError
from seedq.queueing import EMBEDDED_BROKER, broker_url, make_celery
from seedq.settings import (
    PIPELINE_NEEDS,
    Settings,
    env_name,
    require,
    weak_secret,
    weak_secrets,
)

BIN = Path(sys.executable).parent
# Never connected to: the checks run before any connection is made.
CLOSED = "redis://127.0.0.1:1/0"
PLACEHOLDER_URL = "redis://:change-me@127.0.0.1:1/0"
# A worker that did start would run until killed: this bounds "at once".
START_LIMIT_S = 30


def _run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bare = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), **env}
    return subprocess.run(
        argv, env=bare, cwd=cwd, capture_output=True, text=True, timeout=START_LIMIT_S
    )


def _one_line(out: subprocess.CompletedProcess[str]) -> str:
    """The process's only line of output, after checking that it refused to start."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and not out.stdout.strip(), (out.stdout, out.stderr)
    return lines[0]


def _celery(*args: str) -> list[str]:
    return [str(BIN / "celery"), "-A", "worker", *args]


def test_a_worker_with_nothing_configured_exits_naming_the_broker(tmp_path: Path) -> None:
    line = _one_line(_run(_celery("worker"), tmp_path))
    assert "SEEDQ_BROKER_URL is not set" in line


def test_a_worker_with_a_broker_only_names_the_store_and_the_key(tmp_path: Path) -> None:
    line = _one_line(_run(_celery("worker"), tmp_path, SEEDQ_BROKER_URL=CLOSED))
    assert "SEEDQ_REDIS_URL and OXEN_API_KEY are not set" in line


def test_a_worker_without_the_key_names_it(tmp_path: Path) -> None:
    out = _run(_celery("worker"), tmp_path, SEEDQ_BROKER_URL=CLOSED, SEEDQ_REDIS_URL=CLOSED)
    line = _one_line(out)
    assert "OXEN_API_KEY is not set" in line and "SEEDQ_REDIS_URL" not in line


def test_beat_with_nothing_configured_exits_naming_the_broker(tmp_path: Path) -> None:
    out = _run(_celery("beat", "-s", str(tmp_path / "beat")), tmp_path)
    assert "SEEDQ_BROKER_URL is not set" in _one_line(out)


def test_an_invalid_setting_is_named_by_its_variable(tmp_path: Path) -> None:
    out = _run(_celery("worker"), tmp_path, SEEDQ_BROKER_URL=CLOSED, SEEDQ_LEASE_S="soon")
    assert "setting SEEDQ_LEASE_S:" in _one_line(out)


def test_celerys_own_broker_variable_is_refused(tmp_path: Path) -> None:
    out = _run(
        _celery("worker"), tmp_path, SEEDQ_BROKER_URL=CLOSED, CELERY_BROKER_URL="redis://x:1/2"
    )
    assert "CELERY_BROKER_URL" in _one_line(out)


def test_events_with_nothing_configured_names_all_three(tmp_path: Path) -> None:
    line = _one_line(_run([str(BIN / "seedq"), "events"], tmp_path))
    assert "SEEDQ_BROKER_URL, SEEDQ_REDIS_URL and OXEN_API_KEY are not set" in line


def test_events_without_the_key_says_so_before_listening(tmp_path: Path) -> None:
    out = _run(
        [str(BIN / "seedq"), "events"], tmp_path, SEEDQ_BROKER_URL=CLOSED, SEEDQ_REDIS_URL=CLOSED
    )
    assert "OXEN_API_KEY is not set" in _one_line(out)


def test_the_broker_is_the_setting_and_nothing_else() -> None:
    with pytest.raises(ConfigError, match="SEEDQ_BROKER_URL is not set"):
        broker_url(Settings())
    assert broker_url(Settings(broker_url=CLOSED)) == CLOSED


def test_an_embedded_app_never_reaches_a_configured_broker() -> None:
    assert broker_url(Settings(), embedded=True) == EMBEDDED_BROKER
    app = make_celery(Settings(broker_url=CLOSED), embedded=True)
    assert app.conf.broker_url == EMBEDDED_BROKER


def test_celerys_variable_cannot_move_an_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://elsewhere:6379/0")
    with pytest.raises(ConfigError, match="CELERY_BROKER_URL"):
        make_celery(Settings(broker_url=CLOSED))
    with pytest.raises(ConfigError, match="CELERY_BROKER_URL"):
        make_celery(Settings(), embedded=True)
    monkeypatch.setenv("CELERY_BROKER_URL", CLOSED)  # the same URL moves nothing
    assert make_celery(Settings(broker_url=CLOSED)).conf.broker_url == CLOSED


def test_require_names_only_what_is_missing() -> None:
    require(Settings(broker_url=CLOSED, redis_url=CLOSED, oxen_api_key="k"), "x", *PIPELINE_NEEDS)
    with pytest.raises(ConfigError, match=r"^OXEN_API_KEY is not set: a worker cannot start"):
        require(Settings(broker_url=CLOSED, redis_url=CLOSED), "a worker", *PIPELINE_NEEDS)
    assert env_name("lease_s") == "SEEDQ_LEASE_S" and env_name("oxen_api_key") == "OXEN_API_KEY"
    with pytest.raises(KeyError):
        env_name("no_such_setting")


# Placeholder secrets ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["worker"], {"SEEDQ_BROKER_URL": PLACEHOLDER_URL}, "SEEDQ_BROKER_URL"),
        (["beat", "-s", "beat"], {"SEEDQ_BROKER_URL": PLACEHOLDER_URL}, "SEEDQ_BROKER_URL"),
        (
            ["worker"],
            {"SEEDQ_BROKER_URL": CLOSED, "SEEDQ_REDIS_URL": "redis://:@127.0.0.1:1/0"},
            "SEEDQ_REDIS_URL is empty",
        ),
        (
            ["worker"],
            {"SEEDQ_BROKER_URL": CLOSED, "SEEDQ_REDIS_URL": CLOSED, "OXEN_API_KEY": "change-me"},
            "OXEN_API_KEY is the placeholder",
        ),
        (
            ["flower", "--port=1"],
            {"SEEDQ_BROKER_URL": CLOSED, "FLOWER_BASIC_AUTH": "admin:change-me"},
            "FLOWER_BASIC_AUTH",
        ),
    ],
    ids=["worker-broker", "beat-broker", "worker-empty-store", "worker-key", "flower-login"],
)
def test_celery_processes_refuse_a_placeholder_secret(
    tmp_path: Path, argv: list[str], env: dict[str, str], named: str
) -> None:
    line = _one_line(_run(_celery(*argv), tmp_path, **env))
    assert named in line and "refusing to start" in line
    assert "change-me@" not in line  # the URL itself is never shown


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["events"], {"OXEN_API_KEY": "change-me"}, "OXEN_API_KEY"),
        (["status"], {"SEEDQ_REDIS_URL": PLACEHOLDER_URL}, "SEEDQ_REDIS_URL"),
        (["runs"], {"SEEDQ_REDIS_URL": CLOSED, "OXEN_API_KEY": ""}, "OXEN_API_KEY is empty"),
    ],
    ids=["events", "status", "runs"],
)
def test_commands_refuse_a_placeholder_secret(
    tmp_path: Path, argv: list[str], env: dict[str, str], named: str
) -> None:
    line = _one_line(_run([str(BIN / "seedq"), *argv], tmp_path, **env))
    assert line.startswith("error: ") and named in line


@pytest.mark.parametrize(
    ("value", "weak"),
    [
        ("change-me", True),
        ("change-me-too", True),
        (" Change-Me ", True),
        ("", True),
        ("   ", True),
        ("change-me-please-9f8e", False),
        ("3f9a1c0e7b", False),
    ],
)
def test_weak_secret(value: str, weak: bool) -> None:
    assert (weak_secret(value) is not None) is weak


def test_weak_secrets_name_the_variable_never_the_value() -> None:
    assert weak_secrets(Settings.model_construct(broker_url=CLOSED, redis_url=CLOSED)) == []
    found = weak_secrets(
        Settings.model_construct(
            broker_url="redis://:change-me-too@redis:6379/0",
            redis_url="redis://:s3cr3t-value@redis:6379/0",
            oxen_api_key=SecretStr("change-me"),
            notify_secret=SecretStr(""),
            flower_basic_auth=SecretStr("ops:9f8e7d6c,admin:change-me"),
        )
    )
    assert found == [
        "the password in SEEDQ_BROKER_URL is the placeholder 'change-me-too' of .env.example",
        "OXEN_API_KEY is the placeholder 'change-me' of .env.example",
        "SEEDQ_NOTIFY_SECRET is empty",
        "a password in FLOWER_BASIC_AUTH is the placeholder 'change-me' of .env.example",
    ]
    with pytest.raises(ValidationError, match="FLOWER_BASIC_AUTH"):
        Settings(flower_basic_auth=SecretStr("admin:"))
    assert Settings(flower_basic_auth=SecretStr("admin:9f8e7d6c")).flower_basic_auth
