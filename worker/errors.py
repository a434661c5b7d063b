"""Errors the worker pipeline raises itself, each under its outcome in ``seedq.errors``.

SeedqError
└── WorkerError
    ├── InvalidVideo       (JobFailed) the download is not a playable video; kept in quarantine
    ├── Undeliverable      (JobFailed) a playable clip cannot go to its output key; kept too
    ├── InputUnavailable   (JobFailed) an input image cannot be made fetchable
    └── RunPaused          (RunFatal)  the run is paused: the provider refused the account
"""

from __future__ import annotations

from seedq.errors import JobFailed, RunFatal, SeedqError


class WorkerError(SeedqError):
    """Base of every error the worker raises itself."""


class InvalidVideo(WorkerError, JobFailed):
    """The file is not a playable video. A playable one that differs from the request
    (duration, size, audio) is delivered with warnings instead (``worker.verify``)."""


class Undeliverable(WorkerError, JobFailed):
    """The clip cannot be stored at its output key (the store refuses the name, or the
    key holds another job's clip); it is kept in quarantine (``worker.delivery``)."""


class InputUnavailable(WorkerError, JobFailed):
    """An input image could not be read or published for the provider to fetch."""


class RunPaused(WorkerError, RunFatal):
    """Nothing else in this run can succeed until an operator acts (key, credits)."""
