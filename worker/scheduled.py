"""``seedq.scheduled_run``: Celery beat's task for one named schedule (docs/schedules.md).

Fetches the schedule's manifest (a local path, an https URL or an s3:// URI), validates
every row and, only when there is no error, submits it as a run named
``"<schedule> <date>"``. An invalid manifest creates no run; its problems are logged.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis
from celery import Task, shared_task

from producer.errors import ManifestError
from producer.manifest import YAML_LIMIT_NOTE, ReadOptions
from producer.plan import CheckResult, check
from producer.spool import Spool
from producer.submit import SubmitResult, submit
from producer.timing import RunTiming, TimedStore
from provider.catalog import catalog_for
from provider.errors import ProviderError
from provider.guard import guarded_client
from seedq.admission import admission_for
from seedq.catalog import ModelCatalog
from seedq.dispatch import Sender, celery_sender
from seedq.errors import ConfigError
from seedq.refs import max_output_key_bytes
from seedq.schedules import (
    TASK_SCHEDULED_RUN,
    Schedule,
    find_schedule,
    last_firing,
    load_schedules,
    run_name,
)
from seedq.settings import Settings, load_settings
from seedq.store import JobStore

log = logging.getLogger(__name__)
MANIFEST_SUFFIXES = (".csv", ".yaml", ".yml")


class FetchError(ConfigError):
    """The schedule's manifest could not be fetched."""


def _suffix(location: str) -> str:
    suffix = PurePosixPath(urlsplit(location).path).suffix.lower()
    return suffix if suffix in MANIFEST_SUFFIXES else ".yaml"


def shown(url: str) -> str:
    """``url`` without its query or user info: a presigned link's signature and session
    token must not reach a log line."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}"


def fetch_limit(dest: Path, settings: Settings) -> tuple[int, str]:
    """The bytes a fetched manifest may have, and the note that names that limit: a YAML
    one is read whole, so it is held to SEEDQ_MAX_YAML_MANIFEST_BYTES while it is still
    being fetched, as the reader would hold it after (``producer.manifest``)."""
    if dest.suffix in (".yaml", ".yml") and (
        settings.max_yaml_manifest_bytes < settings.max_manifest_bytes
    ):
        return settings.max_yaml_manifest_bytes, YAML_LIMIT_NOTE
    return settings.max_manifest_bytes, " (SEEDQ_MAX_MANIFEST_BYTES)"


def fetch_https(
    url: str, dest: Path, max_bytes: int, client: httpx.Client, *, limit_note: str = ""
) -> None:
    """Stream ``url`` into ``dest``, stopping at ``max_bytes``; FetchError beyond them
    (with ``limit_note``, which names the limit), on a bad answer, or when the client's
    guard refuses the URL or a redirect hop."""
    size = 0
    where = shown(url)
    try:
        with client.stream("GET", url, follow_redirects=True) as response:
            if response.status_code != 200:
                raise FetchError(f"{where}: HTTP {response.status_code}")
            with dest.open("wb") as out:
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchError(f"{where}: larger than {max_bytes} bytes{limit_note}")
                    out.write(chunk)
    except httpx.HTTPError as exc:  # its text can hold the URL: only the kind is kept
        raise FetchError(f"{where}: {type(exc).__name__}") from None
    except ProviderError as exc:  # the guard: refused URL or hop, DNS failure
        raise FetchError(f"{where}: {exc.message}") from None


def fetch_s3(uri: str, dest: Path, max_bytes: int, s3: Any, *, limit_note: str = "") -> None:
    parts = urlsplit(uri)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
        if int(head["ContentLength"]) > max_bytes:
            raise FetchError(f"{uri}: larger than {max_bytes} bytes{limit_note}")
        s3.download_file(bucket, key, str(dest))
    except FetchError:
        raise
    except Exception as exc:  # botocore's errors share no useful base with boto3's
        raise FetchError(f"{uri}: {type(exc).__name__}: {exc}") from None


def fetch_manifest(location: str, workdir: Path, settings: Settings) -> Path:
    """A local file holding the manifest at ``location``."""
    if location.startswith("https://"):
        dest = workdir / f"manifest{_suffix(location)}"
        max_bytes, note = fetch_limit(dest, settings)
        with guarded_client(
            allow_private=settings.allow_private_urls, timeout=settings.http_timeout_s
        ) as client:
            fetch_https(location, dest, max_bytes, client, limit_note=note)
        return dest
    if location.startswith("s3://"):
        from storage.s3 import make_client

        dest = workdir / f"manifest{_suffix(location)}"
        max_bytes, note = fetch_limit(dest, settings)
        s3 = make_client(settings.s3_endpoint_url)
        fetch_s3(location, dest, max_bytes, s3, limit_note=note)
        return dest
    return Path(location).expanduser()


def run_schedule(
    schedule: Schedule,
    settings: Settings,
    store_for: Callable[[RunTiming], TimedStore],
    send: Sender,
    *,
    now: datetime,
    catalog: ModelCatalog | None = None,
) -> SubmitResult | None:
    """Fetch, validate and submit one schedule's manifest; None when it was invalid."""
    opts = _read_options(schedule, settings)
    timing = RunTiming(window=schedule.window, tz=schedule.timezone)
    with tempfile.TemporaryDirectory(prefix="seedq-schedule-") as tmp:
        path = fetch_manifest(schedule.manifest, Path(tmp), settings)
        with Spool() as spool:
            checked = check(
                [path],
                opts,
                catalog or catalog_for(settings),
                auto_estimate_s=settings.auto_duration_estimate_s,
                on_job=spool.write,
            )
            if checked.errors:
                _log_problems(schedule, checked)
                return None
            store = store_for(timing)
            done = submit(
                spool,
                store,
                send,
                admission=admission_for(store, settings),
                name=run_name(schedule, now),
                manifests=[schedule.manifest],
                priority=schedule.priority,
                budget=schedule.budget,
            )
    log.info("schedule %s: run %s, %d job(s)", schedule.name, done.run_id, done.enqueued)
    return done


def _read_options(schedule: Schedule, settings: Settings) -> ReadOptions:
    """How a schedule's manifest is read: its own defaults and model over the settings'."""
    return ReadOptions(
        default_model=settings.model,
        sets=dict(schedule.sets),
        model_override=schedule.model,
        allow_private_urls=settings.allow_private_urls,
        max_manifest_bytes=settings.max_manifest_bytes,
        input_root=settings.input_root,
        s3_allow=settings.input_s3_grants,
        max_yaml_manifest_bytes=settings.max_yaml_manifest_bytes,
        max_output_key_bytes=max_output_key_bytes(settings.output),
    )


def _log_problems(schedule: Schedule, checked: CheckResult) -> None:
    for problem in checked.problems:
        log.error("schedule %s: %s", schedule.name, problem)
    log.error(
        "schedule %s: %d problem(s) in %s; no run was created",
        schedule.name,
        len(checked.errors),
        schedule.manifest,
    )


def claim_firing(
    client: redis.Redis, schedule: Schedule, now: datetime, task_id: str
) -> datetime | None:
    """Take the schedule's latest firing for this task: the firing time when it is this
    task's to run (first claim, or this very message delivered again after a crash, even
    hours later), None when another message already started it (two beats, or a beat
    restarted)."""
    store = JobStore(client)
    claimed = store.firing_of_task(task_id)
    if claimed:
        return datetime.fromisoformat(claimed)
    fired = last_firing(schedule.cron, schedule.timezone, now)
    if not store.claim_firing(schedule.name, fired.isoformat(), task_id):
        return None
    return fired


@shared_task(bind=True, name=TASK_SCHEDULED_RUN, acks_late=True, ignore_result=True)
def scheduled_run(self: Task, name: str) -> None:
    """Submit the run of schedule ``name`` (sent by Celery beat)."""
    from seedq.queueing import redis_client

    settings = load_settings()
    try:
        if settings.schedules is None:
            raise ConfigError("SEEDQ_SCHEDULES is not set on this worker")
        schedule = find_schedule(load_schedules(settings.schedules), name)
        client = redis_client(settings)
        now = datetime.fromtimestamp(time.time(), tz=UTC)
        if claim_firing(client, schedule, now, str(self.request.id)) is None:
            log.warning("schedule %s: this firing was started already; not run twice", name)
            return
        run_schedule(
            schedule,
            settings,
            lambda timing: TimedStore(client, timing),
            celery_sender(self.app),
            now=now,
        )
    except (ConfigError, ManifestError) as exc:
        log.error("schedule %s: not run: %s", name, exc)
