"""Errors of the worker pipeline, split by what happens next.

    SeedqError
    └── WorkerError
        ├── TransientError        retry the step later, with backoff
        │   └── StorageUnavailable   the output store did not answer or is full
        ├── JobFailed             fail this job now, with the reason; never retried
        │   ├── InvalidVideo         the download is not a playable video (kept in quarantine)
        │   └── InputUnavailable     an input image cannot be made fetchable
        └── RunPaused             stop submitting for the whole run (401, no credits)

Provider errors (``worker.provider.errors``) keep their own tree with the same three
branches; :func:`worker.tasks._run_step` maps both onto one decision.
"""

from __future__ import annotations

from seedq.errors import SeedqError


class WorkerError(SeedqError):
    """Base of every worker error."""


class TransientError(WorkerError):
    """The step may succeed if tried again later."""


class StorageUnavailable(TransientError):
    """The output store failed (unreachable, refused, or out of space)."""


class JobFailed(WorkerError):
    """The job cannot succeed; ``str(exc)`` is the reason shown to the operator."""


class InvalidVideo(JobFailed):
    """The file is not a playable video. A playable one that differs from the request
    (duration, size, audio) is delivered with warnings instead (``worker.verify``)."""


class InputUnavailable(JobFailed):
    """An input image could not be read or published for the provider to fetch."""


class RunPaused(WorkerError):
    """Nothing else in this run can succeed until an operator acts (key, credits)."""
