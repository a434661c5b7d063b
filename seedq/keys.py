"""Every Redis key seedq uses, built in one place.

All keys start with ``seedq:``. Job and run records carry no TTL on purpose: they are
the ledger of what was paid for, and ``seedq`` never lets Redis evict them
(``maxmemory-policy noeviction`` in the stack).
"""

from __future__ import annotations

PREFIX = "seedq:"

RUNS = PREFIX + "runs"  # zset run_id -> created_at (s); all runs, newest last


def job(job_id: str) -> str:
    """Hash: one job's spec, state and results. No TTL."""
    return f"{PREFIX}job:{job_id}"


def run(run_id: str) -> str:
    """Hash: a run's name, status, options and timestamps. No TTL."""
    return f"{PREFIX}run:{run_id}"


def run_jobs(run_id: str) -> str:
    """List: the run's job ids in manifest order. No TTL."""
    return f"{PREFIX}run:{run_id}:jobs"


def run_counts(run_id: str) -> str:
    """Hash: state -> number of the run's jobs in it. No TTL."""
    return f"{PREFIX}run:{run_id}:counts"


def generation(generation_id: str) -> str:
    """String: the job id a provider generation belongs to. No TTL (the audit needs it)."""
    return f"{PREFIX}gen:{generation_id}"
