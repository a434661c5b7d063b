"""The contract between ``producer/`` and ``worker/``: task names, queues and payloads,
and the states of jobs and runs that both sides read.

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


class RunStatus(StrEnum):
    """A run's stored status (field ``status`` of ``keys.run``).

    The admission and time-step Lua scripts are given these values, never spelled
    literals (``tests/test_contract.py`` checks the scripts hold none)."""

    SCHEDULED = "scheduled"  # held until its ``start_at`` (the tick starts it)
    REGISTERING = "registering"  # its jobs are being registered; it may already submit
    ACTIVE = "active"
    PAUSED = "paused"  # submits nothing until resumed; ``reason`` says why
    CANCELLED = "cancelled"


# Which runs may submit: admission takes their waiting jobs, the submit step sends them.
ADMITTING = frozenset({RunStatus.ACTIVE, RunStatus.REGISTERING})
