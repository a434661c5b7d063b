"""The worker's tick: once a second, one worker (whichever holds the tick lock) admits
waiting jobs into free slots, re-drives the jobs of worker processes whose heartbeat
lapsed (``worker.heartbeat``) and those whose lease expired (in flight, or delivering),
sweeps the provider's list of active generations, and asks what the delivered jobs were
billed (``worker.biller``: a few calls per tick serve every job whose bill is due, so
many jobs finishing together cost no task and no slot each).

The sweep is what keeps tracking cheap: one ``GET /api/ai/queue`` per poll interval
serves every job in flight, renewing the leases of those still running; only a job
whose generation has left the active list is tracked (one GET for its result: by the
sweep itself for the first few, which hands a success to delivery, :func:`track_here`;
by a ``seedq.track`` task for the rest and for failures), or one whose generation it
lists as processing for ``stuck_after_s`` (the track step kills and retries it,
worker.unsticking). Completion events (``seedq events``)
usually get there first; without them, the sweep is the path by which a finished
generation frees its slot, so it runs when the poll interval says, between ticks if
need be, not at the next one.

Each interval between sweeps is the poll interval moved at random by up to half of it
either way (:func:`sweep_interval_s`): as many list calls in the long run, but no phase
lock. With generations of one fixed latency, equal intervals would lock them in step
with the sweeps: a job starts just after the sweep that freed its slot and finishes
just after a later one, so it waits almost a whole interval to be seen, where a
completion at a random moment waits half of one on average.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from random import random
from typing import Any

from celery import bootsteps
from celery.signals import worker_shutting_down

from seedq import contract
from seedq.contract import ADMITTING, JobState
from seedq.dispatch import Sender, admit_and_send, celery_sender
from seedq.errors import SeedqError
from worker.biller import bill_due
from worker.notify import notify_from_tick
from worker.retention import retain
from worker.runtime import Runtime, get_runtime
from worker.stuck import is_stuck, worth_tracking
from worker.throttled_calls import reported
from worker.timekeeper import apply_timing
from worker.tracking import poll_success

log = logging.getLogger(__name__)

TICK_S = 1.0
LOCK_MS = 5000
MIN_PAUSE_S = 0.05
SWEEP_JITTER = 0.5  # share of the poll interval a sweep may come early or late
TRACK_HERE_S = 2.0  # the sweep's own tracking, at most: well inside the tick lock's LOCK_MS
# The state of an in-flight job -> the task that moves it on when its lease expired.
REDRIVE = {
    JobState.REGISTERED: contract.TASK_SUBMIT,
    JobState.SUBMITTING: contract.TASK_SUBMIT,
    JobState.SUBMITTED: contract.TASK_TRACK,
    JobState.RETRYING: contract.TASK_TRACK,  # resolves the retry, never sends it again
}
# The state of a job whose message a dead worker process held -> the task to send again.
TAKE_OVER = {**REDRIVE, JobState.GENERATED: contract.TASK_DELIVER}
REDRIVEN_NAMED = 20  # a dead worker's jobs named in its log line, at most
# The states in which an admitted job waits on a submit message.
NEEDS_SUBMIT = frozenset({JobState.REGISTERED, JobState.SUBMITTING})
# After a reap, the look for messages that are nowhere waits this long: what live
# processes were sending at that moment is in its queue by then.
ORPHAN_CHECK_AFTER_S = 3.0
# What the sweep reads of a stuck job to know whether its track step would act now.
_STUCK_FIELDS = ("stuck_generation_id", "retry_refused_of")


@dataclass
class TickReport:
    admitted: int = 0
    redriven: int = 0
    released: int = 0
    swept: bool = False
    finished: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)  # tracked for being stuck processing
    billed: list[str] = field(default_factory=list)
    reaped: list[str] = field(default_factory=list)  # worker processes found dead
    next_sweep_at: float = math.inf  # when the next sweep is due (Runtime.now's clock)


def _send(send: Sender, task: str, jobs: list[tuple[str, str]], countdown_s: float = 0.0) -> None:
    """One batch of ``task`` messages for these (run, job) pairs; nothing when empty."""
    if jobs:
        messages: list[contract.JobMessage] = [
            {"run_id": run_id, "job_id": job_id} for run_id, job_id in jobs
        ]
        send(task, messages, countdown_s)


def _in_flight_jobs(rt: Runtime, job_ids: list[str]) -> list[tuple[str, str, str, str]]:
    """(job_id, run_id, state, generation_id) of each in-flight job, in one round trip."""
    rows = rt.store.job_fields(job_ids, ("run_id", "state", "generation_id"))
    return [
        (job_id, run_id, state, gen)
        for job_id, (run_id, state, gen) in zip(job_ids, rows, strict=True)
    ]


def redrive_dead_workers(rt: Runtime, send: Sender, report: TickReport) -> None:
    """Send again the step of every job a dead worker process held (its heartbeat
    lapsed), each once, when it was due: at once, or at the ETA of a held retry."""
    reaped = rt.leases.reap_dead()
    if not reaped.workers:
        return
    report.reaped.extend(reaped.workers)
    due_at: dict[str, float] = {}
    for held in reaped.held:  # two messages of one job: one step sent, the earlier
        due_at[held.job_id] = min(due_at.get(held.job_id, held.eta_s), held.eta_s)
    now = rt.now()
    by_send: dict[tuple[str, float], list[tuple[str, str]]] = defaultdict(list)
    for job_id, run_id, state, _gen in _in_flight_jobs(rt, list(due_at)):
        task = TAKE_OVER.get(JobState(state)) if state else None
        if task is None:  # ended meanwhile: nothing to move on
            continue
        countdown_s = round(max(0.0, due_at[job_id] - now), 3)
        by_send[(task, countdown_s)].append((run_id, job_id))
        report.redriven += 1
    for (task, countdown_s), jobs in by_send.items():
        ids = [job_id for _run_id, job_id in jobs]
        rt.leases.renew(ids, ahead_s=countdown_s)  # the lease path must not send them too
        rt.leases.touch_deliveries(ids, ahead_s=countdown_s)
        _send(send, task, jobs, countdown_s)
    rt.leases.forget_reaped(reaped)  # only now: a tick that died before sent nothing
    # What the dead process was taking from its queue as it died is held by nobody and
    # is in no queue: looked for once messages sent just now are in theirs.
    rt.leases.schedule_orphan_check(now + ORPHAN_CHECK_AFTER_S)
    redriven = [f"{job_id} ({task})" for (task, _), jobs in by_send.items() for _, job_id in jobs]
    log.warning(
        "worker process(es) %s stopped beating: %d job(s) re-driven: %s",
        ", ".join(reaped.workers),
        len(redriven),
        ", ".join(redriven[:REDRIVEN_NAMED]) + (" ..." if len(redriven) > REDRIVEN_NAMED else ""),
    )


def redrive_orphans(rt: Runtime, send: Sender, report: TickReport) -> None:
    """After a worker process died: send again the step of every job that waits on a
    message which is neither queued nor held by a worker process (live, or dead and not
    yet reaped). Such a message was being taken from its queue by the process as it
    died; without this, only its lease (``lease_s``) would bring the job back.

    A message received and not acknowledged counts only if a process holds it: each is
    recorded held before kombu records it unacknowledged, so one in kombu's record that
    nobody holds is in the hands of no running task (a record dropped by its process,
    the message never handed to a task), and only the broker's visibility timeout, in
    hours, would ever bring it back. A message being sent or acknowledged at this very
    moment may be taken for lost: its job gets a second one, which finds it moved on
    (every step is a compare-and-set)."""
    if rt.broker is None or not rt.leases.orphan_check_due(rt.now()):
        return
    named = rt.leases.held_jobs() | rt.broker.queued_job_ids()
    waiting = [
        *(j for j in _in_flight_jobs(rt, rt.admission.in_flight()) if j[2] in NEEDS_SUBMIT),
        *(j for j in _in_flight_jobs(rt, rt.leases.delivering()) if j[2] == JobState.GENERATED),
    ]
    by_task: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for job_id, run_id, state, _gen in waiting:
        if job_id not in named:
            by_task[TAKE_OVER[JobState(state)]].append((run_id, job_id))
    for task, jobs in by_task.items():
        ids = [job_id for _run_id, job_id in jobs]
        rt.leases.renew(ids)
        rt.leases.touch_deliveries(ids)
        _send(send, task, jobs)
        report.redriven += len(jobs)
    if by_task:
        lost = [f"{job_id} ({task})" for task, jobs in by_task.items() for _, job_id in jobs]
        log.warning(
            "%d job(s) waited on a message that is nowhere (taken by a process as it "
            "died): re-driven: %s",
            len(lost),
            ", ".join(lost[:REDRIVEN_NAMED]) + (" ..." if len(lost) > REDRIVEN_NAMED else ""),
        )


def redrive_expired(rt: Runtime, send: Sender, report: TickReport) -> None:
    expired = rt.leases.expired()
    if not expired:
        return
    alive = []
    by_task: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for job_id, run_id, state, _gen in _in_flight_jobs(rt, expired):
        task = REDRIVE.get(JobState(state)) if state else None
        if task is None:  # left the provider without releasing (a crash in between)
            rt.admission.release(run_id, job_id)
            report.released += 1
            continue
        by_task[task].append((run_id, job_id))
        alive.append(job_id)
        report.redriven += 1
    for task, jobs in by_task.items():
        _send(send, task, jobs)
    rt.leases.renew(alive)


def redrive_deliveries(rt: Runtime, send: Sender, report: TickReport) -> None:
    """Send delivery again for generated jobs nobody has been delivering for a lease."""
    stalled = rt.leases.stalled_deliveries()
    if not stalled:
        return
    again = []
    for job_id, run_id, state, _gen in _in_flight_jobs(rt, stalled):
        if state != JobState.GENERATED:  # moved on without its lease dropped (a crash)
            rt.leases.forget_delivery(job_id)
            continue
        again.append((run_id, job_id))
        report.redriven += 1
    _send(send, contract.TASK_DELIVER, again)
    rt.leases.touch_deliveries([job_id for _run_id, job_id in again])


def sweep(rt: Runtime, send: Sender, report: TickReport) -> None:
    """One list call for every generation in flight (see the module docstring)."""
    jobs = [j for j in _in_flight_jobs(rt, rt.admission.in_flight()) if j[2] == JobState.SUBMITTED]
    if not jobs or rt.poll_throttle.acquire_or_wait_s() > 0:
        return
    listed = reported(rt.poll_throttle, rt.provider.list)
    active = {g.generation_id: g for g in listed.generations}
    report.swept = True
    running = [job_id for job_id, _run, _state, gen in jobs if gen in active]
    rt.leases.renew(running)
    now, stuck_after_s = rt.now(), rt.settings.stuck_after_s
    # A job whose message a worker holds (the track this sweep sent last time, most
    # likely) is not sent another: sweeping every interval would otherwise send one per
    # sweep while its track waits for a turn of the poll budget.
    held = rt.leases.held_jobs()
    stuck, finished = [], []
    for job_id, run_id, _state, gen in jobs:
        if gen and gen not in active:
            if job_id not in held:
                finished.append((run_id, job_id))
                report.finished.append(job_id)
        elif gen and is_stuck(active[gen], now=now, stuck_after_s=stuck_after_s):
            stuck.append((job_id, run_id, gen))
    _send(send, contract.TASK_TRACK, track_here(rt, send, finished))
    to_track = _stuck_to_track(rt, stuck)
    _send(send, contract.TASK_TRACK, [(run_id, job_id) for job_id, run_id in to_track])
    report.stuck.extend(job_id for job_id, _run_id in to_track)  # its GET confirms, then retries


def track_here(rt: Runtime, send: Sender, finished: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Make the status call here, in the tick, for the first of the (run, job) pairs the
    sweep saw finish, hand each that succeeded to delivery and refill its slot at once
    (worker.tracking.poll_success), and return the others, for the track queue: a
    message would add a hop (the send, a free worker thread, its pickup) between the
    sweep and the refill. At most ``sweep_tracks`` of them, within half a poll interval
    and ``TRACK_HERE_S``, so a burst of completions or a slow provider cannot hold up
    the tick (nor outlast its lock); a provider error sends the rest to the queue.

    A process killed in the middle leaves the job where a lost message would: still
    submitted (the next sweep tracks it again), or generated with no deliver message
    (the orphan check after its heartbeat lapses sends one)."""
    limit = min(rt.settings.sweep_tracks, len(finished))
    deadline = time.monotonic() + min(rt.settings.poll_interval_s / 2, TRACK_HERE_S)
    queued: list[tuple[str, str]] = []
    for done, (run_id, job_id) in enumerate(finished[:limit]):
        if done and time.monotonic() >= deadline:
            return queued + finished[done:]
        try:
            if not poll_success(rt, send, run_id, job_id):
                queued.append((run_id, job_id))
        except SeedqError as exc:  # the provider's (or Redis's) trouble: the tasks retry
            log.info("job %s: the sweep's status call failed (%s); sent to the queue", job_id, exc)
            return queued + finished[done:]
        except Exception:  # a bug: the track task, with its retries, tries it again
            log.exception("job %s: tracking it in the sweep failed; sent to the queue", job_id)
            return queued + finished[done:]
    return queued + finished[limit:]


def _stuck_to_track(rt: Runtime, stuck: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """The stuck jobs (job, run, generation) the track step would act on now
    (worker.stuck.worth_tracking): a retry waits while its run admits nothing; giving up
    (after the retry, or after the provider refused one) never waits."""
    if not stuck:
        return []
    rows = rt.store.job_fields([job_id for job_id, _run, _gen in stuck], _STUCK_FIELDS)
    statuses = rt.store.run_statuses([run_id for _job, run_id, _gen in stuck])
    chosen = []
    for (job_id, run_id, gen), (killed, refused_of), status in zip(
        stuck, rows, statuses, strict=True
    ):
        admitting = status in ADMITTING
        if worth_tracking(retried=bool(killed) or refused_of == gen, may_retry=admitting):
            chosen.append((job_id, run_id))
    return chosen


def tick(rt: Runtime, send: Sender, *, full: bool = True) -> TickReport:
    """One tick; ``full=False``: only the sweep, if it is due (between full ticks)."""
    report = TickReport()
    woke = rt.now()  # the sweep's clock: when the ticker woke, however long the rest took
    if full:
        apply_timing(rt.store.redis, woke)  # scheduled starts and windows, before admitting
        report.admitted = admit_and_send(rt.admission, send)
        redrive_dead_workers(rt, send, report)  # first: they get leases, not sent twice
        redrive_orphans(rt, send, report)
        redrive_expired(rt, send, report)
        redrive_deliveries(rt, send, report)
    _sweep_if_due(rt, send, report, woke)
    if full:
        # Last: bills wait for a free turn of the poll budget, after tracking has had its own.
        report.billed = bill_due(rt, now=rt.now()).billed
        notify_from_tick(rt)  # runs that finished or stopped: their webhooks, once
        retain(rt.store, rt.storage, now_s=rt.now(), retention_days=rt.settings.retention_days)
    return report


def _sweep_if_due(rt: Runtime, send: Sender, report: TickReport, now: float) -> None:
    """Sweep if it is due, noting when the next one is (in the report too)."""
    poll_interval_s = rt.settings.poll_interval_s
    due_at = rt.store.next_sweep_at()
    if not sweep_is_due(due_at, now, poll_interval_s):
        report.next_sweep_at = due_at
        return
    # bandit B311: the sweep's jitter, not a secret.
    interval_s = sweep_interval_s(poll_interval_s, rand=random())  # nosec B311
    report.next_sweep_at = next_sweep_at(due_at, now, interval_s)
    rt.store.set_next_sweep(report.next_sweep_at)
    sweep(rt, send, report)


def sweep_is_due(due_at: float, now: float, poll_interval_s: float) -> bool:
    """Whether the sweep due at ``due_at`` is due ``now``; also when it is further off
    than any interval between sweeps (a shorter poll interval since, a clock set back)."""
    return not now < due_at <= now + poll_interval_s * (1.0 + SWEEP_JITTER)


def next_sweep_at(due_at: float, now: float, interval_s: float) -> float:
    """When the sweep after the one due at ``due_at`` is: ``interval_s`` after that one
    was due, so a late sweep (a long tick) does not put off every sweep after it, but
    never sooner than half of ``interval_s`` from ``now``, so it brings no burst. Each is
    due at least ``interval_s`` after the one before: no more sweeps than the intervals
    say. From ``now`` if none was due before (0.0: never noted; or due later, see
    :func:`sweep_is_due`)."""
    since = due_at if 0 < due_at <= now else now
    return max(since + interval_s, now + interval_s / 2)


def sweep_interval_s(poll_interval_s: float, *, rand: float) -> float:
    """The time from one sweep to the next: the poll interval, moved by up to
    ``SWEEP_JITTER`` of it either way, uniformly (``rand`` in [0, 1), passed in so this
    stays pure). Its mean is the poll interval, so the list calls per unit of time are
    what the interval says; never closer than half an interval."""
    return poll_interval_s * (1.0 + SWEEP_JITTER * (2.0 * rand - 1.0))


def tick_once(rt: Runtime, send: Sender, *, full: bool = True) -> TickReport | None:
    """Tick if no other worker is ticking right now."""
    token = uuid.uuid4().hex
    if not rt.store.take_tick_lock(token, LOCK_MS):
        return None
    try:
        return tick(rt, send, full=full)
    finally:
        rt.store.release_tick_lock(token)


class Ticker(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs :func:`tick_once` every second in a thread of each worker process, until the
    worker begins to shut down: a worker draining its last steps (up to a delivery's
    length) takes on nothing new, and its sweep, with nobody consuming its queues here
    any more, would send a track message per sweep for every finished generation."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        worker_shutting_down.connect(self._shutting_down, weak=False, dispatch_uid=id(self))
        self._thread = threading.Thread(
            target=self._loop, args=(parent.app,), name="seedq-ticker", daemon=True
        )
        self._thread.start()

    def _shutting_down(self, **_: Any) -> None:
        self._stop.set()  # from a signal handler: only sets the event

    def stop(self, parent: Any) -> None:
        worker_shutting_down.disconnect(dispatch_uid=id(self))
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self, app: Any) -> None:
        run_ticker(get_runtime, celery_sender(app), self._stop)


def run_ticker(runtime: Callable[[], Runtime], send: Sender, stop: threading.Event) -> None:
    """Tick every second until ``stop`` is set, and wake between ticks when the sweep is
    due (a finished generation's slot waits for the sweep that sees it: a sweep held to
    a beat would idle it until then). A process learns when the next sweep is due from
    the tick it ran; one that woke for the sweep and found another ticking looks again
    shortly after (that tick may have looked just before the sweep was due).

    Full ticks keep a fixed beat (each a second after the last was due, not after it
    ended), so the time a tick takes does not stretch the interval between them."""
    full_at = time.monotonic() + TICK_S
    sweep_at = math.inf  # not known until this process ticks
    while True:
        if stop.wait(max(0.0, min(full_at, sweep_at) - time.monotonic())):
            return
        woke = time.monotonic()
        full = woke >= full_at - MIN_PAUSE_S  # a sweep due just before a tick: one wake
        if full:
            full_at = max(full_at + TICK_S, woke)  # late: at once, no burst to catch up
        try:
            rt = runtime()
            report = tick_once(rt, send, full=full)
            if report is not None:
                remaining_s = report.next_sweep_at - rt.now()  # the store's clock, then ours
                sweep_at = time.monotonic() + remaining_s
        except Exception:  # a failed tick is retried next second; never kill the loop
            log.exception("tick failed")
            sweep_at = math.inf
        sweep_at = max(sweep_at, woke + MIN_PAUSE_S)  # each wake takes the tick lock


def install_ticker(app: Any) -> None:
    """Run the :class:`Ticker` in every worker process of ``app``."""
    if Ticker not in app.steps["worker"]:
        app.steps["worker"].add(Ticker)
