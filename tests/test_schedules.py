"""The schedule file model, cron arithmetic and Celery beat's entries."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from seedq.beat import beat_schedule, cron_schedule
from seedq.errors import ConfigError
from seedq.queueing import celery_config
from seedq.schedules import (
    due,
    last_firing,
    load_schedules,
    next_runs,
    parse_schedules,
    run_name,
)
from seedq.settings import Settings

PARIS = ZoneInfo("Europe/Paris")
EXAMPLE = Path(__file__).resolve().parents[1] / "manifests" / "schedules.example.yaml"

GOOD = """
schedules:
  - name: nightly
    cron: "0 22 * * *"
    timezone: Europe/Paris
    manifest: s3://bucket/nightly.csv
    priority: 5
    budget: 120
    sets: {resolution: 720p, Duration: 5}
    window: "22:00-06:00"
  - name: weekly
    cron: "30 3 * * 1"
    manifest: manifests/catalog.yaml
"""

# Never connected to: configuring an app needs a broker URL, not a broker.
BROKER = "redis://127.0.0.1:1/0"


def test_parse_good_file() -> None:
    nightly, weekly = parse_schedules(GOOD)
    assert nightly.window == "22:00-06:00" and nightly.sets == {
        "resolution": "720p",
        "duration": "5",
    }
    assert (nightly.priority, nightly.budget, weekly.timezone) == (5, 120.0, "UTC")


def test_example_file_is_valid() -> None:
    assert [s.name for s in load_schedules(EXAMPLE)]


def test_errors_name_the_schedule_and_field() -> None:
    text = """
schedules:
  - name: ok
    cron: "0 1 * * *"
    manifest: a.csv
  - name: broken
    cron: "every night"
    timezone: Mars/Olympus
    manifest: ftp://x/y.csv
    window: "22-6"
    priority: 5000
    colour: blue
"""
    with pytest.raises(ConfigError) as caught:
        parse_schedules(text, "s.yaml")
    message = str(caught.value)
    for field in ("cron", "timezone", "manifest", "window", "priority", "colour"):
        assert f"s.yaml: schedules[1] (broken).{field}:" in message, (field, message)
    assert "schedules[0]" not in message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("schedules: [", "not valid YAML"),
        ("- {name: a, cron: '0 1 * * *', manifest: a.csv}\n" * 2, "two schedules are named 'a'"),
        ("schedules: {}", "schedules"),
    ],
)
def test_file_level_errors(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_schedules(text)
    assert needle in str(caught.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_schedules(tmp_path / "nope.yaml")


def test_next_runs_keep_wall_clock_across_dst() -> None:
    after = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
    runs = next_runs("0 22 * * *", "Europe/Paris", after, 3)
    assert [r.astimezone(PARIS).hour for r in runs] == [22, 22, 22]
    assert [r.astimezone(UTC).hour for r in runs] == [21, 21, 20]  # CET, CET, CEST


def test_due() -> None:
    last = datetime(2026, 6, 1, 20, 0, tzinfo=UTC)  # 22:00 Paris, the last run
    before = datetime(2026, 6, 2, 19, 59, tzinfo=UTC)
    is_due, next_s = due("0 22 * * *", "Europe/Paris", last, before)
    assert not is_due and next_s == 60
    at = datetime(2026, 6, 2, 20, 0, 5, tzinfo=UTC)
    is_due, next_s = due("0 22 * * *", "Europe/Paris", last, at)
    assert is_due and next_s == pytest.approx(24 * 3600 - 5)


@pytest.mark.parametrize(
    ("now", "fired"),
    [
        (datetime(2026, 6, 2, 20, 0, 0, tzinfo=UTC), datetime(2026, 6, 2, 20, 0, tzinfo=UTC)),
        (datetime(2026, 6, 2, 20, 0, 7, tzinfo=UTC), datetime(2026, 6, 2, 20, 0, tzinfo=UTC)),
        (datetime(2026, 6, 2, 19, 59, 0, tzinfo=UTC), datetime(2026, 6, 1, 20, 0, tzinfo=UTC)),
    ],
)
def test_last_firing(now: datetime, fired: datetime) -> None:
    assert last_firing("0 22 * * *", "Europe/Paris", now) == fired


def test_a_firing_is_run_by_one_message_only() -> None:
    import fakeredis

    from worker.scheduled import claim_firing

    (nightly, _) = parse_schedules(GOOD)
    client = fakeredis.FakeRedis()
    at = datetime(2026, 6, 2, 20, 0, 3, tzinfo=UTC)
    fired = claim_firing(client, nightly, at, "task-1")
    assert fired is not None
    assert claim_firing(client, nightly, at, "task-2") is None  # a second beat's message
    assert claim_firing(client, nightly, at, "task-1") == fired  # task-1 redelivered
    next_night = datetime(2026, 6, 3, 20, 0, 1, tzinfo=UTC)
    assert claim_firing(client, nightly, next_night, "task-3") not in (None, fired)
    # task-1 redelivered much later (the broker's visibility timeout): still its firing.
    assert claim_firing(client, nightly, next_night, "task-1") == fired


def test_run_name_uses_the_schedule_zone() -> None:
    (nightly, _) = parse_schedules(GOOD)
    assert run_name(nightly, datetime(2026, 6, 1, 22, 30, tzinfo=UTC)) == "nightly 2026-06-02"


def test_cron_schedule_for_beat() -> None:
    now = datetime(2026, 6, 2, 20, 0, 5, tzinfo=UTC)
    sched = cron_schedule("0 22 * * *", "Europe/Paris", nowfun=lambda: now)
    state = sched.is_due(datetime(2026, 6, 1, 20, 0, tzinfo=UTC))
    assert state.is_due
    assert pickle.loads(pickle.dumps(sched)) == sched


def test_beat_schedule_in_celery_config(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(GOOD, encoding="utf-8")
    conf = celery_config(Settings(schedules=path, broker_url=BROKER))
    entry = conf["beat_schedule"]["seedq:nightly"]
    assert entry["task"] == "seedq.scheduled_run" and entry["kwargs"] == {"name": "nightly"}
    assert entry["options"] == {"queue": "seedq.submit"}
    assert conf["task_routes"]["seedq.scheduled_run"] == {"queue": "seedq.submit"}
    assert "beat_schedule" not in celery_config(Settings(broker_url=BROKER))
    assert beat_schedule(path).keys() == {"seedq:nightly", "seedq:weekly"}


def test_bad_schedule_file_fails_config_clearly(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("schedules:\n  - {name: x, cron: nope, manifest: a.csv}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"schedules\[0\] \(x\)\.cron"):
        celery_config(Settings(schedules=path, broker_url=BROKER))


def test_celery_beat_with_a_bad_file_says_so_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("schedules:\n  - {name: x, cron: nope, manifest: a.csv}\n", encoding="utf-8")
    env = {**os.environ, "SEEDQ_SCHEDULES": str(path), "SEEDQ_BROKER_URL": BROKER}
    celery = Path(sys.executable).with_name("celery")
    out = subprocess.run(
        [str(celery), "-A", "worker", "beat", "-s", str(tmp_path / "beat")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr + out.stdout
    assert "schedules[0] (x).cron" in out.stderr
