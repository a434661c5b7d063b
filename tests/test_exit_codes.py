"""The exit status of ``seedq`` commands means one thing each (README.md, "Exit codes"):
0 everything succeeded, 1 some work failed, 2 bad input or usage, 3 a service could not
be reached (in one line, never an "internal error"), 4 a bug. Each from real commands;
the decision itself, :func:`cli.main.exit_status`, over the error tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import typer
from kombu.exceptions import OperationalError
from typer.testing import CliRunner

from cli.main import EXIT_BUG, EXIT_UNREACHABLE, app, exit_status, guarded
from producer.errors import SubmitError
from producer.jobs import JobSpec
from provider.errors import (
    GenerationFailed,
    ProviderConnectionError,
    ProviderTimeout,
    RateLimited,
    Unauthenticated,
)
from seedq.admission import Admission
from seedq.contract import JobState
from seedq.errors import ConfigError, JobFailed, SeedqError, ServiceUnavailable
from seedq.queueing import connection_error
from seedq.store import JobStore

runner = CliRunner()
BIN = Path(sys.executable).parent
CLOSED_REDIS = "redis://127.0.0.1:1/0"
# The simulator's content filter fails a job whose image path says "face": a demo run
# with one such row ends with work failed, nothing else wrong.
FAILING_ROW = "a face,https://example.com/face.png,4,480p"
GOOD_ROW = "a cat,https://example.com/cat.png,4,480p"


def _manifest(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "m.csv"
    path.write_text("\n".join(["prompt,input_image,duration,resolution", *rows]) + "\n")
    return path


def _seedq(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    bare = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), **env}
    return subprocess.run(
        [str(BIN / "seedq"), *args],
        env=bare,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_0_when_everything_succeeded(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(_manifest(tmp_path, GOOD_ROW))])
    assert result.exit_code == 0, result.output


def test_1_when_a_job_of_the_run_failed(tmp_path: Path) -> None:
    """Also: the demo is embedded whatever is configured, and reaches no cluster (the
    closed ports would end it with 3)."""
    manifest = str(_manifest(tmp_path, FAILING_ROW))
    out = _seedq(
        tmp_path,
        "run",
        "--demo",
        manifest,
        SEEDQ_BROKER_URL=CLOSED_REDIS,
        SEEDQ_REDIS_URL=CLOSED_REDIS,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "failed" in out.stdout and "Blocked" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "BAD-ROW"],  # a row with an invalid resolution
        ["validate", "--no-such-option", "BAD-ROW"],  # usage, said by click
        ["status"],  # not configured for it: no SEEDQ_REDIS_URL
    ],
)
def test_2_for_bad_input_or_usage(tmp_path: Path, args: list[str]) -> None:
    bad = _manifest(tmp_path, "p,https://example.com/a.png,4,9k")
    result = runner.invoke(app, [str(bad) if a == "BAD-ROW" else a for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_3_in_one_line_when_redis_refuses_the_connection(tmp_path: Path) -> None:
    out = _seedq(tmp_path, "status", SEEDQ_REDIS_URL=CLOSED_REDIS)
    assert out.returncode == EXIT_UNREACHABLE, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stdout + out.stderr, out.stderr
    assert lines[0].startswith("error: Redis is unreachable (SEEDQ_REDIS_URL)")
    assert "127.0.0.1:1" in lines[0] and "internal error" not in lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["runs"],
        ["report", "r-some-run"],
        ["pause", "r-some-run"],
        ["audit", "r-some-run"],
        ["submit", "--offline", "MANIFEST"],
        ["run", "MANIFEST"],
    ],
)
def test_3_from_every_command_that_reads_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.setenv("SEEDQ_REDIS_URL", CLOSED_REDIS)
    monkeypatch.setenv("SEEDQ_BROKER_URL", CLOSED_REDIS)
    monkeypatch.setenv("OXEN_API_KEY", "sk-test")
    manifest = str(_manifest(tmp_path, GOOD_ROW))
    result = runner.invoke(app, [manifest if a == "MANIFEST" else a for a in args])
    assert result.exit_code == EXIT_UNREACHABLE, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Redis is unreachable" in errors[0], result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.output


@pytest.mark.redis
def test_3_when_the_broker_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_redis: redis.Redis, real_redis_url: str
) -> None:
    monkeypatch.setenv("SEEDQ_REDIS_URL", real_redis_url)
    monkeypatch.setenv("SEEDQ_BROKER_URL", CLOSED_REDIS)
    result = runner.invoke(app, ["submit", "--offline", str(_manifest(tmp_path, GOOD_ROW))])
    assert result.exit_code == EXIT_UNREACHABLE, result.output
    assert "the broker is unreachable (SEEDQ_BROKER_URL)" in result.stderr


def _invoke_raising(exc: BaseException) -> int:
    """The exit status of a guarded command that raises ``exc``."""

    def boom() -> None:
        raise exc

    def other() -> None:
        """A second command, so that `boom` is named on the command line."""

    one = typer.Typer()
    one.command("boom")(guarded(boom))
    one.command("other")(other)
    return runner.invoke(one, ["boom"]).exit_code


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (ConnectionRefusedError(111, "Connection refused"), EXIT_UNREACHABLE),
        (redis.ConnectionError("Error 111 connecting to 127.0.0.1:1."), EXIT_UNREACHABLE),
        (OperationalError("Error 111 connecting to 127.0.0.1:1."), EXIT_UNREACHABLE),
        (redis.AuthenticationError("invalid password"), 2),
        (ProviderConnectionError("connection refused"), EXIT_UNREACHABLE),
        (RuntimeError("a bug"), EXIT_BUG),
    ],
)
def test_what_a_command_raises_decides_its_status(exc: BaseException, status: int) -> None:
    assert _invoke_raising(exc) == status


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (ConfigError("x"), 2),
        (SubmitError("x"), 2),
        (Unauthenticated("key refused", status_code=401), 2),
        (SeedqError("x"), 2),
        (ServiceUnavailable("x"), 3),
        (ProviderConnectionError("refused"), 3),
        (ProviderTimeout("timed out"), 3),
        (RateLimited("slow down", status_code=429), 3),
        (JobFailed("x"), 1),
        (GenerationFailed("filtered"), 1),
    ],
)
def test_exit_status_follows_the_error_tree(exc: SeedqError, status: int) -> None:
    assert exit_status(exc) == status


def test_connection_errors_name_their_service_in_one_line() -> None:
    said = connection_error(redis.ConnectionError("Error 111 connecting\nto 127.0.0.1:1."))
    assert isinstance(said, ServiceUnavailable)
    assert (
        str(said) == "Redis is unreachable (SEEDQ_REDIS_URL): Error 111 connecting to 127.0.0.1:1."
    )
    assert "broker" in str(connection_error(OperationalError("refused")))
    assert isinstance(connection_error(redis.AuthenticationError("no")), ConfigError)
    full = connection_error(redis.exceptions.OutOfMemoryError("OOM command not allowed"))
    assert isinstance(full, ServiceUnavailable) and "refuses writes" in str(full)
    assert connection_error(ValueError("not a connection")) is None
    assert connection_error(redis.ResponseError("WRONGTYPE")) is None  # a bug, not a service
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as refused:
            raise RuntimeError("wrapped by a library") from refused
    except RuntimeError as wrapped:
        assert isinstance(connection_error(wrapped), ServiceUnavailable)


def test_help_says_what_each_status_means() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    flat = " ".join(result.output.split())
    for said in ("0 everything succeeded", "1 some work failed", "2 bad input", "3 a service"):
        assert said in flat


def _run_with_one_job(store: JobStore, *path: JobState, **fields: str) -> None:
    """Run r1 with one job j1, walked along ``path`` as the workers would (``fields``
    set by the last move)."""
    store.create_run("r1", "night", {"priority": 0})
    spec = JobSpec("j1", "m.csv", 2, "model", {"prompt": "p"}, "j1.mp4", est_cost=0.5)
    for _ in store.register("r1", [(spec.id, spec.fingerprint, spec.to_record())]):
        pass
    store.set_run_status("r1", "active")
    Admission(store, max_in_flight=1, lease_s=300).admit()
    before = JobState.REGISTERED
    for i, to in enumerate(path, 1):
        assert store.move("j1", "r1", to, expect=[before], **(fields if i == len(path) else {})).ok
        before = to


@pytest.fixture
def closed_provider(monkeypatch: pytest.MonkeyPatch, real_redis_url: str) -> None:
    """The cluster's Redis, and a provider on a port nothing listens on."""
    monkeypatch.setenv("SEEDQ_REDIS_URL", real_redis_url)
    monkeypatch.setenv("OXEN_API_KEY", "sk-test")
    monkeypatch.setenv("SEEDQ_PROVIDER_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("SEEDQ_ALLOW_PRIVATE_URLS", "true")


@pytest.mark.redis
def test_3_in_one_line_when_the_provider_is_unreachable(
    real_redis: redis.Redis, closed_provider: None
) -> None:
    _run_with_one_job(JobStore(real_redis))
    result = runner.invoke(app, ["audit", "r1"])
    assert result.exit_code == EXIT_UNREACHABLE, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: the provider is unavailable (SEEDQ_PROVIDER_URL):")
    assert "Connection refused" in errors[0] and "Traceback" not in result.output


@pytest.mark.redis
def test_1_when_a_cancel_could_not_reach_the_provider(
    real_redis: redis.Redis, closed_provider: None
) -> None:
    store = JobStore(real_redis)
    _run_with_one_job(store, JobState.SUBMITTING, JobState.SUBMITTED, generation_id="gen-1")

    result = runner.invoke(app, ["cancel", "r1"])

    assert result.exit_code == 1, result.output
    assert "1  provider cancel errors" in result.output and "Traceback" not in result.output
    assert store.job("j1")["state"] == "cancelled"  # in seedq; the generation may still run
