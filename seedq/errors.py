"""The one exception tree of seedq, split by what happens next.

    SeedqError
    ├── ConfigError             settings that cannot work together; nothing starts
    │   └── LocalStoreError       the private redis-server of a local paid run cannot run
    ├── TransientError          retry the step later, with backoff (``retry_after_s``
    │   │                       when the other side said how long)
    │   └── ServiceUnavailable    Redis or the broker cannot be reached
    ├── JobFailed               fail this job now, with the reason; never retried
    └── RunFatal                stop submitting for the whole run (401, no credits)

Each package roots its own errors (``producer.errors``, ``provider.errors``,
``storage.errors``, ``worker.errors``, ``simulator.errors``) and files each one under
the branch above that says what to do with it: ``provider.errors.RateLimited`` is a
``TransientError``, ``worker.errors.InvalidVideo`` a ``JobFailed``. A task therefore
catches the three branches once (:func:`worker.runner.run_step`), and catching
:class:`SeedqError` at an entry point catches everything the project raises on
purpose: anything else reaching the top is a bug, not bad input. The command line's
exit status follows the branches (``cli.main.exit_status``): 2 for a ConfigError, 3 for a
TransientError (a service that did not answer), 1 for work that failed.
"""


class SeedqError(Exception):
    """Base class of every error seedq raises on purpose."""


class ConfigError(SeedqError):
    """The settings are invalid or contradict each other."""


class LocalStoreError(ConfigError):
    """The private redis-server of a local paid run is missing, busy or will not start."""


class TransientError(SeedqError):
    """The step may succeed if tried again later."""

    retry_after_s: float | None = None  # what the other side asked for, when it said


class ServiceUnavailable(TransientError):
    """Redis or the broker refused or dropped the connection; ``str(exc)`` names which."""


class JobFailed(SeedqError):
    """The job cannot succeed; ``str(exc)`` is the reason shown to the operator."""


class RunFatal(SeedqError):
    """Nothing else in this run can succeed until an operator acts (key, credits)."""
