"""What a paid ``seedq run`` on one machine knows of its folder, before and after it
runs: where its state lives, which earlier run it resumes, which jobs the folder's clips
and sidecars prove delivered (never sent again), which local images a remote provider
could never fetch (refused before anything is sent), the paid generations of
earlier runs it waits for, and SIGTERM stopping it as Ctrl-C does. The wiring that uses
them is ``cli.run.open_target``."""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from cli.console import make_console
from cli.progress import in_flight
from producer.jobs import JobSpec
from seedq.errors import ConfigError
from seedq.settings import Settings
from seedq.store import JobStore

out = make_console()


@contextmanager
def interrupted_by_sigterm() -> Iterator[None]:
    """SIGTERM (``docker stop``, ``kill``, a CI job's timeout) stops a run as Ctrl-C
    does: a KeyboardInterrupt, so the stack in this process is closed in order (its
    worker threads, the private redis-server flushed and stopped), the command says
    ``interrupted`` and exits 130, and running it again resumes. Python's default would
    end the process on the spot, leaving the redis-server behind and saying nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclasses.dataclass
class SkipCount:
    n: int = 0


def finish_earlier_runs(
    store: JobStore,
    run_id: str,
    *,
    timeout_s: float | None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Generations of an earlier, interrupted run in this folder's store (of other
    manifests) are paid for: wait until they are delivered too, rather than leave them
    to a later run."""
    started = time.monotonic()
    for other in store.runs():
        if other.id == run_id or not in_flight(other):
            continue
        out.print(f"finishing {in_flight(other)} job(s) in flight of earlier run {other.id}")
        while (info := store.run(other.id)) is not None and in_flight(info):
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                return
            sleep(0.5)


def check_local_output(settings: Settings) -> None:
    """A paid run on one machine keeps its state in a private redis-server: say at once,
    before any validation or provider call, when there is none."""
    from cli.localredis import find_server

    find_server()


def refuse_unreachable_inputs(settings: Settings, jobs: Iterable[JobSpec]) -> None:
    """Before anything is sent: a local image the provider could never fetch (a remote
    provider, videos in a local folder, so nowhere to publish it) stops the run, instead
    of failing every job one by one."""
    from urllib.parse import urlsplit

    from worker.inputs import IMAGE_FIELDS, NoInputPublisher, make_publisher

    if not isinstance(make_publisher(settings), NoInputPublisher):
        return
    for job in jobs:
        for name in IMAGE_FIELDS:
            value = job.params.get(name)
            if isinstance(value, str) and urlsplit(value).scheme not in ("http", "https"):
                raise ConfigError(
                    f"{job.source}:{job.line}: {name}: {value} is not a URL the provider can "
                    "fetch; use https:// images, or --out s3://bucket/prefix (local images "
                    "are uploaded there); nothing was sent"
                )


def state_root(settings: Settings) -> Path:
    """The folder whose ``.seedq/`` holds a paid local run's state: the output folder,
    or the current one when the videos go to S3 (where local input images must go too,
    for a remote provider to fetch them)."""
    return Path.cwd() if settings.output_is_s3 else settings.output_dir


def resumable_run(store: JobStore, manifests: list[Path]) -> str | None:
    """The latest run in this folder's store, when it was of the same manifests: its
    jobs that are still moving are followed to the end instead of being left behind."""
    latest = store.runs(limit=1)
    if not latest:
        return None
    known = latest[0].meta.get("manifests")
    if not isinstance(known, list):
        return None
    # The same files however they were written (``./m.csv``, ``m.csv``, an absolute path).
    if [Path(str(p)).resolve() for p in known] == [p.resolve() for p in manifests]:
        return latest[0].id
    return None


def skip_delivered(
    jobs: Iterable[JobSpec], settings: Settings, provider_url: str, skipped: SkipCount
) -> Iterator[JobSpec]:
    """``jobs`` without those whose clip and sidecar in the output folder prove them
    delivered by this provider (counted in ``skipped``): those are never sent again."""
    from producer.resume import sidecar_proves_delivered
    from storage import make_storage
    from worker.delivery import sidecar_key

    storage = make_storage(settings)
    for job in jobs:
        video = storage.stat(job.output_key)
        sidecar = storage.get_json(sidecar_key(job.output_key)) if video else None
        size = video.size if video else None
        if sidecar_proves_delivered(job, sidecar, video_bytes=size, provider_url=provider_url):
            skipped.n += 1
        else:
            yield job
