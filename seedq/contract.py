"""The contract between ``producer/`` and ``worker/``: task names, queues and payloads.

Payloads carry ids only, never a spec, a URL with credentials or a key: the worker
reads everything else from the job store. Changing a name here is a breaking change
for messages already in a broker.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypedDict

TASK_SUBMIT = "seedq.submit"
TASK_TRACK = "seedq.track"
TASK_DELIVER = "seedq.deliver"

QUEUE_SUBMIT = "seedq.submit"
QUEUE_TRACK = "seedq.track"
QUEUE_DELIVER = "seedq.deliver"
ALL_QUEUES = (QUEUE_SUBMIT, QUEUE_TRACK, QUEUE_DELIVER)


class JobMessage(TypedDict):
    """Keyword arguments of every job task."""

    run_id: str
    job_id: str


class JobState(StrEnum):
    """A job's state; see docs/architecture.md for the machine."""

    REGISTERED = "registered"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    RETRYING = "retrying"  # a stuck generation's kill-and-retry may have been sent
    GENERATED = "generated"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({JobState.DELIVERED, JobState.FAILED, JobState.CANCELLED})
