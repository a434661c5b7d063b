"""The validate and submit commands as a person runs them: exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from cli.main import app
from seedq import contract

Write = Callable[[str, str | bytes], Path]
runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def test_validate_valid_prints_plan(write: Write) -> None:
    path = write("m.csv", "prompt,input_image,resolution,duration\np,images/a.png,1080p,5\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "1080p" in result.output and "valid: 1 job(s)" in result.output
    assert "2.25" in result.output  # 5 s at the shipped 1080p price of 0.45


def test_validate_invalid_lists_problems_exit_2(write: Write) -> None:
    path = write("m.csv", "prompt,input_image,resolution\np,images/nope.png,9k\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}:2: input_image: no such file" in result.output
    assert f"{path}:2: resolution: must be one of" in result.output
    assert "nothing was sent" in result.output
    assert "Traceback" not in result.output


def test_validate_leaves_room_for_the_s3_output_prefix(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 allows 1024 bytes for a whole key: a long SEEDQ_OUTPUT prefix leaves less."""
    key = "/".join(["d" * 200] * 4) + ".mp4"  # 807 bytes: fits under a short prefix
    path = write("m.csv", f"prompt,input_image,output\np,images/a.png,{key}\n")
    monkeypatch.setenv("SEEDQ_OUTPUT", "s3://bucket/runs")
    assert runner.invoke(app, ["validate", str(path)]).exit_code == 0
    monkeypatch.setenv("SEEDQ_OUTPUT", "s3://bucket/" + "p" * 300)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}:2: output: output key is 807 bytes (UTF-8), longer than 683" in result.output


@pytest.mark.parametrize(
    "content", [b"", b"\x00\x01binary", b"\xff\xfe\x00", b'prompt,input_image\n"open', b"a" * 5000]
)
def test_validate_hostile_files_exit_2(write: Write, content: bytes) -> None:
    result = runner.invoke(app, ["validate", str(write("m.csv", content))])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_bad_setting_is_a_clear_error(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEDQ_POLL_INTERVAL_S", "often")
    result = runner.invoke(app, ["validate", str(write("m.csv", "prompt,input_image\n"))])
    assert result.exit_code == 2
    assert "setting SEEDQ_POLL_INTERVAL_S" in result.output


def test_set_needs_field_equals_value(write: Write) -> None:
    result = runner.invoke(app, ["validate", "--set", "resolution", str(write("m.csv", "x"))])
    assert result.exit_code == 2 and "--set takes FIELD=VALUE" in result.output


def test_submit_without_services_says_how(write: Write) -> None:
    path = write("m.csv", "prompt,input_image\np,images/a.png\n")
    result = runner.invoke(app, ["submit", str(path)])
    assert result.exit_code == 2
    assert "SEEDQ_BROKER_URL" in result.output and "seedq run" in result.output


def test_submit_dry_run_sends_nothing(write: Write) -> None:
    path = write("m.csv", "prompt,input_image\np,images/a.png\n")
    result = runner.invoke(app, ["submit", "--dry-run", str(path)])
    assert result.exit_code == 0 and "dry run: nothing was sent" in result.output


@pytest.mark.redis
def test_submit_on_real_redis_prints_run_id(
    write: Write, real_redis: redis.Redis, real_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = real_redis_url
    monkeypatch.setenv("SEEDQ_BROKER_URL", url)
    monkeypatch.setenv("SEEDQ_REDIS_URL", url)
    monkeypatch.setenv("OXEN_API_KEY", "sk-test-secret-value")
    path = write("m.csv", "prompt,input_image\np,images/a.png\nq,images/b.jpg\n")
    result = runner.invoke(app, ["submit", "--name", "night", "--offline", str(path)])
    assert result.exit_code == 0, result.output
    run_id = result.output.strip().splitlines()[-1]
    assert run_id.startswith("r") and "2 job(s) enqueued" in result.output
    assert real_redis.llen(contract.QUEUE_SUBMIT) == 2
    for raw in real_redis.lrange(contract.QUEUE_SUBMIT, 0, -1):
        assert b"sk-test-secret-value" not in raw
        assert json.loads(raw)["headers"]["task"] == contract.TASK_SUBMIT
    # Not yet picked up by a worker: sent again (the submit step is idempotent per job).
    again = runner.invoke(app, ["submit", "--offline", str(path)])
    assert again.exit_code == 0 and "2 job(s) enqueued" in again.output


def test_console_script_runs() -> None:
    """The installed entry point answers, quickly, without importing the heavy parts."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cli.main import main; import sys; sys.argv=['seedq','--help']; main()",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert out.returncode == 0 and "validate" in out.stdout and "submit" in out.stdout


def test_submit_refuses_a_webhook_inside_the_network(write: Write) -> None:
    path = write("m.csv", "prompt,input_image\np,images/a.png\n")
    result = runner.invoke(
        app, ["submit", "--dry-run", "--notify", "http://10.1.2.3/hook?token=abc", str(path)]
    )
    assert result.exit_code == 2
    assert "notify URL http://10.1.2.3/…" in result.output and "token" not in result.output


@pytest.mark.redis
def test_submit_keeps_its_webhooks_with_the_run(
    write: Write, real_redis: redis.Redis, real_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEEDQ_BROKER_URL", real_redis_url)
    monkeypatch.setenv("SEEDQ_REDIS_URL", real_redis_url)
    monkeypatch.setenv("SEEDQ_NOTIFY_URL", "https://ops.example.com/all")
    path = write("m.csv", "prompt,input_image\np,images/a.png\n")
    result = runner.invoke(
        app,
        ["submit", "--offline", "--notify", "https://team.example.com/h", str(path)],
    )
    assert result.exit_code == 0, result.output
    run_id = result.output.strip().splitlines()[-1]
    meta = json.loads(real_redis.hget(f"seedq:run:{run_id}", "meta") or b"{}")
    assert meta["notify"] == ["https://team.example.com/h", "https://ops.example.com/all"]
