"""Sending job messages: one ``Sender`` shape, one Celery-backed sender, one
admit-and-send.

Every place that hands jobs to the workers (the producer, run control, the task that
freed a slot, the tick, the completion listener) sends through a :class:`Sender`, so
routing lives in one table (``seedq.queueing.ROUTES``) and a test swaps in a list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from seedq import contract
from seedq.admission import Admission
from seedq.queueing import queue_for


class Sender(Protocol):
    """Sends messages of one job task (``contract.TASK_*``), after ``countdown_s``."""

    def __call__(
        self, task: str, messages: Sequence[contract.JobMessage], countdown_s: float = 0.0
    ) -> None: ...


def celery_sender(app: Any) -> Sender:
    """Sends on one pooled broker connection per batch, instead of one per message."""

    def send(task: str, messages: Sequence[contract.JobMessage], countdown_s: float = 0.0) -> None:
        with app.producer_or_acquire() as producer:
            for msg in messages:
                app.send_task(
                    task,
                    kwargs=dict(msg),
                    queue=queue_for(task),
                    countdown=countdown_s or None,
                    producer=producer,
                )

    return send


def admit_and_send(admission: Admission, send: Sender) -> int:
    """Admit what the in-flight cap allows now and send those jobs' submit messages."""
    admitted = admission.admit()
    if admitted:
        send(contract.TASK_SUBMIT, [{"run_id": a.run_id, "job_id": a.job_id} for a in admitted])
        admission.sent(admitted)  # not before: a send that never happened is re-driven soon
    return len(admitted)
