"""Each worker process's heartbeat, and the job messages it holds.

A thread of every worker process renews its heartbeat (``keys.worker_alive``, TTL
``heartbeat_s``) every third of ``heartbeat_s``. Each job message the process receives
(ETA ones too) is recorded as held until its task ends (``task_postrun``): as seedq's
Redis transport takes it from its queue, before kombu records it unacked
(``seedq.broker.on_receipt``), so that no SIGKILL finds a message unacked and not held;
on another transport, at Celery's ``task_received``. Each beat renews the leases of the
jobs held, so a slow step on a live worker is never re-driven however long it takes. A
SIGKILLed process stops beating: within ``heartbeat_s`` its heartbeat lapses and the
next tick (``worker.ticker``) sends again the step of every job it held. What a crash
costs is therefore ``heartbeat_s`` plus a tick, not ``lease_s``, which stays the last
resort for a job held by no known process (a message lost between processes). A process
that was only late to beat has its jobs re-driven beside its own steps: harmless, every
step being a compare-and-set on the job's state, and it enters itself again at its next
beat. Each beat also forgets what the process no longer has in hand
(:meth:`Heartbeat.prune`), so a record left behind never keeps a job's lease alive.

A warm shutdown (SIGTERM) finishes the steps running, under the process's beats, and
hands back to its queue every message received and not started (ETA ones too):
seedq's transport tells the process of each as it is restored (``seedq.broker.
on_return``), and its record is dropped. Only then, the broker connection closed
(:func:`hand_over`, from the worker's ``on_stopped``), does the process leave: it
retires when it holds nothing more; a message it could not hand back (the broker away
as it closed) stays recorded, and the process says itself dead at once, so the next
tick sends those jobs' steps again within a second, not after a lapse, the visibility
timeout or a lease.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from celery import bootsteps
from celery.signals import task_postrun, task_received

from seedq import broker, contract
from worker.runtime import Runtime, get_runtime

log = logging.getLogger(__name__)

JOB_TASKS = frozenset({contract.TASK_SUBMIT, contract.TASK_TRACK, contract.TASK_DELIVER})
BEATS_PER_HEARTBEAT = 3  # a beat or two may be late (a busy GIL, a Redis blip) and no more


def celery_task_ids() -> set[str]:
    """The task ids this Celery worker process has in hand: received (ETA ones too),
    running, or waiting for a thread."""
    from celery.worker import state

    for _ in range(5):  # the consumer's thread changes these sets as this one reads them
        try:
            held = (*state.reserved_requests, *state.active_requests, *state.scheduled_requests)
        except RuntimeError:
            continue
        return {request.id for request in held}
    raise RuntimeError("the worker's requests kept changing while read")


class Heartbeat:
    """One worker process: its id, its beats, and what it holds."""

    def __init__(
        self,
        worker_id: str,
        runtime: Callable[[], Runtime] = get_runtime,
        in_hand: Callable[[], set[str]] = celery_task_ids,
    ) -> None:
        self.worker_id = worker_id
        self._runtime = runtime
        self._in_hand = in_hand
        self._beaten = False
        self._lock = threading.Lock()
        self._suspects: set[str] = set()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        # Set once the broker has told of a message: its receipts are then the record,
        # and Celery's task_received (later, for the same messages) is not needed.
        self.broker_tells = False

    def prune(self) -> set[str]:
        """Forget the messages recorded as held that this process no longer has: a task
        whose end could not be recorded (Redis away), messages Celery dropped when its
        broker connection was lost (they go back to their queue). Recorded held, their
        jobs' leases would be renewed for ever. A record is dropped when missing from
        the worker's hands at two beats running, as the record is written just before
        Celery takes the message in hand. Returns the task ids dropped."""
        leases = self._runtime().leases
        missing = leases.held_tasks(self.worker_id) - self._in_hand()
        stale, self._suspects = missing & self._suspects, missing - self._suspects
        leases.unhold(self.worker_id, *sorted(stale))
        return stale

    def beat(self) -> None:
        rt = self._runtime()
        with self._lock:  # the first beat may come from a message's hold and the thread
            renewed = rt.leases.beat(self.worker_id, rt.settings.heartbeat_s)
            if not renewed and self._beaten:
                log.warning(
                    "worker %s: heartbeat had lapsed; its jobs may have been re-driven",
                    self.worker_id,
                )
            self._beaten = True

    def interval_s(self) -> float:
        return self._runtime().settings.heartbeat_s / BEATS_PER_HEARTBEAT

    def hold(self, task_id: str, job_id: str, eta_s: float = 0.0) -> None:
        if not self._beaten:  # a message may come before the thread's first beat
            self.beat()
        self._runtime().leases.hold(self.worker_id, task_id, job_id, eta_s)

    def release(self, task_id: str) -> None:
        self._runtime().leases.unhold(self.worker_id, task_id)

    def leave(self) -> list[str]:
        """The process's last word, once its broker connection is closed: retire when
        it holds nothing more, else say itself dead, for the next tick to send the rest
        again at once. Returns the task ids left to the tick.

        On a transport that does not tell of receipts and returns (RabbitMQ gives a
        closed channel's unacknowledged messages to another consumer itself; the
        in-memory one dies with the process), everything is taken as handed back."""
        leases = self._runtime().leases
        left = sorted(leases.held_tasks(self.worker_id)) if self.broker_tells else []
        if not left:
            leases.retire(self.worker_id)
            return []
        leases.abandon(self.worker_id)
        log.warning(
            "worker %s: stopped holding %d message(s) it could not hand back to the "
            "broker: left for the next tick to send again",
            self.worker_id,
            len(left),
        )
        return left

    def start(self) -> None:
        """Beat in a thread of this process until :meth:`halt`."""
        self._halt.clear()
        self._thread = threading.Thread(
            target=self.run, args=(self._halt,), name="seedq-heartbeat", daemon=True
        )
        self._thread.start()

    def halt(self) -> None:
        """Stop beating (idempotent); the last beat's heartbeat lasts ``heartbeat_s``."""
        self._halt.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def run(self, stop: threading.Event) -> None:
        """Beat until ``stop`` is set; a failed beat is tried again at the next one."""
        while True:
            try:
                self.prune()
            except Exception:  # tried again at the next beat
                log.exception("worker %s: could not prune what it holds", self.worker_id)
            try:
                self.beat()
            except Exception:  # Redis away for a moment: the TTL covers a missed beat
                log.exception("worker %s: heartbeat failed", self.worker_id)
            try:
                wait_s = self.interval_s()
            except Exception:
                wait_s = 1.0
            if stop.wait(wait_s):
                return


# The heartbeat of this process while its worker runs; set when the step is built, so a
# prefork child (forked at the pool's start) releases what its parent recorded.
_current: Heartbeat | None = None


def _record(heartbeat: Heartbeat, task_id: str, kwargs: Any, eta_s: float) -> None:
    job_id = (kwargs or {}).get("job_id")
    if not isinstance(job_id, str):
        return
    try:
        heartbeat.hold(task_id, job_id, eta_s)
    except Exception:  # unrecorded, the job falls back on its lease
        log.exception("worker %s: could not record %s as held", heartbeat.worker_id, job_id)


def _on_receipt(receipt: broker.Receipt) -> None:
    heartbeat = _current
    if heartbeat is not None:
        heartbeat.broker_tells = True
        _record(heartbeat, receipt.task_id, receipt.kwargs, receipt.eta_s)


def _on_received(sender: Any = None, request: Any = None, **_: Any) -> None:
    heartbeat = _current
    if heartbeat is None or request is None or request.name not in JOB_TASKS:
        return
    if heartbeat.broker_tells:
        return  # recorded at its receipt already
    eta = request.eta
    _record(heartbeat, request.id, request.kwargs, eta.timestamp() if eta is not None else 0.0)


def _on_return(task_id: str) -> None:
    heartbeat = _current
    if heartbeat is None:
        return
    try:
        heartbeat.release(task_id)
    except Exception:  # left held: sent again by the tick once the process leaves
        log.exception("worker %s: could not release task %s", heartbeat.worker_id, task_id)


def _on_postrun(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
    heartbeat = _current
    if heartbeat is None or task_id is None or getattr(sender, "name", None) not in JOB_TASKS:
        return
    try:
        heartbeat.release(task_id)
    except Exception:  # left held: re-driven (harmlessly) if this process dies
        log.exception("worker %s: could not release task %s", heartbeat.worker_id, task_id)


class HeartbeatStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs :class:`Heartbeat` in a thread of each worker process, from before the
    consumer starts until the pool has stopped (the steps running at a warm shutdown
    finish under its beats); the process leaves later, in :func:`hand_over`."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        global _current
        super().__init__(parent, **kwargs)
        name = getattr(parent, "hostname", None) or "worker"
        self.heartbeat = Heartbeat(f"{name}/{uuid.uuid4().hex[:12]}")
        _current = self.heartbeat

    def start(self, parent: Any) -> None:
        # Beaten before the consumer starts (it is the last step), so that holding the
        # first message received costs one write, not the runtime's construction: a
        # process killed before its hold is recorded leaves that job to its lease.
        try:
            self.heartbeat.beat()
        except Exception:  # the thread tries again
            log.exception("worker %s: first heartbeat failed", self.heartbeat.worker_id)
        self.heartbeat.start()

    def stop(self, parent: Any) -> None:
        self.heartbeat.halt()

    def terminate(self, parent: Any) -> None:  # a cold shutdown: the same
        self.heartbeat.halt()


def hand_over() -> None:
    """The worker's last act, once its consumer has shut down (the broker connection
    closed, what it could hand back restored): this process leaves
    (:meth:`Heartbeat.leave`). Called by the worker's ``on_stopped``, in warm and cold
    shutdowns alike."""
    global _current
    heartbeat, _current = _current, None
    if heartbeat is None:
        return
    heartbeat.halt()
    try:
        heartbeat.leave()
    except Exception:  # its heartbeat lapses instead; what it held is re-driven then
        log.exception("worker %s: could not leave", heartbeat.worker_id)


def install_heartbeat(app: Any) -> None:
    """Run the :class:`HeartbeatStep` in every worker process of ``app``, and record the
    job messages each receives (the hook and signals are global: one whatever the app)."""
    if HeartbeatStep not in app.steps["worker"]:
        app.steps["worker"].add(HeartbeatStep)
    broker.on_receipt(_on_receipt, JOB_TASKS)
    broker.on_return(_on_return)
    task_received.connect(_on_received, weak=False, dispatch_uid="seedq.heartbeat.received")
    task_postrun.connect(_on_postrun, weak=False, dispatch_uid="seedq.heartbeat.postrun")
