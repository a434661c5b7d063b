"""Every Redis key seedq uses, built in one place.

All keys start with ``seedq:``. Job and run records carry no TTL on purpose: they are
the ledger of what was paid for, and ``seedq`` never lets Redis evict them
(``maxmemory-policy noeviction`` in the stack). They live until their run is pruned
(``worker/retention.py``): a run that has ended is archived to the output storage, then
deleted from Redis ``SEEDQ_RETENTION_DAYS`` after it was created (or by ``seedq prune``).
"""

from __future__ import annotations

PREFIX = "seedq:"

RUNS = PREFIX + "runs"  # zset run_id -> created_at (s); all runs, newest last


def job(job_id: str) -> str:
    """Hash: one job's spec, state and results. No TTL; deleted when the run that owns
    it (field ``run_id``) is pruned, compacted once that run is archived."""
    return f"{PREFIX}job:{job_id}"


def run(run_id: str) -> str:
    """Hash: a run's name, status, options and timestamps (``archived_at`` and
    ``archive_uri`` once archived). No TTL; deleted when the run is pruned."""
    return f"{PREFIX}run:{run_id}"


def run_jobs(run_id: str) -> str:
    """List: the run's job ids in manifest order. No TTL; emptied from the head as the
    run is pruned, then deleted."""
    return f"{PREFIX}run:{run_id}:jobs"


def run_counts(run_id: str) -> str:
    """Hash: state -> number of the run's jobs in it. No TTL; deleted when the run is
    pruned."""
    return f"{PREFIX}run:{run_id}:counts"


def generation(generation_id: str) -> str:
    """String: the job id a provider generation belongs to. No TTL (the audit needs it);
    deleted with the job when its run is pruned."""
    return f"{PREFIX}gen:{generation_id}"


# -- throughput control (worker/throttle.py, seedq/admission.py) -------------------

ADMISSION_RUNS = PREFIX + "admission:runs"  # zset run_id -> run priority; runs with waiting jobs
IN_FLIGHT = PREFIX + "inflight"  # zset job_id -> lease expiry (server seconds); the global cap
TICK_LOCK = PREFIX + "tick:lock"  # string with PX: one worker runs the periodic tick at a time
# zset job_id -> server seconds its delivery was last heard of; generated jobs only (they
# hold no in-flight slot, so this is their lease: re-driven after lease_s of silence)
DELIVERING = PREFIX + "delivering"


def run_waiting(run_id: str) -> str:
    """Zset: the run's jobs waiting for capacity; score orders priority, then FIFO."""
    return f"{PREFIX}run:{run_id}:waiting"


def run_in_flight(run_id: str) -> str:
    """Set: the run's jobs holding an in-flight slot (for fair sharing between runs)."""
    return f"{PREFIX}run:{run_id}:inflight"


def limiter(name: str) -> str:
    """Hash: one global rate limiter's state (GCRA theoretical arrival time, adaptive
    rate, breaker). TTL: an hour after its last change (worker/throttle.py, IDLE_TTL_S),
    so an idle limiter restarts at its configured rate."""
    return f"{PREFIX}limit:{name}"


PROVIDER_BACKOFF = PREFIX + "provider:backoff_until"  # string, server seconds; PX = the wait
SEQUENCE = PREFIX + "seq"  # counter: registration order, for FIFO among equal priorities


def run_budget(run_id: str) -> str:
    """Hash: a run's spending cap and what is reserved and spent against it. No TTL;
    deleted when the run is pruned."""
    return f"{PREFIX}run:{run_id}:budget"


# zset job_id -> when to next ask the provider what the job was billed (runtime clock,
# seconds): jobs whose generation succeeded (delivered, or failed in delivery) and whose
# billed cost is not known yet. Entered in the move's Lua script (seedq.store), left
# when the cost is recorded or given up on (seedq.billing). No TTL: it is a ledger.
UNBILLED = PREFIX + "billing:unbilled"


def run_billing(run_id: str) -> str:
    """Hash: a run's money as billed (seedq.billing): ``paid_jobs`` (jobs whose generation
    succeeded), ``estimated`` (the sum of their estimates), ``billed`` (sum of known
    bills), ``billed_jobs``,
    ``unknown_jobs`` (bills that never showed), ``warned`` (jobs delivered with
    warnings). No TTL; deleted when the run is pruned."""
    return f"{PREFIX}run:{run_id}:billing"


NEXT_SWEEP = PREFIX + "tick:next_sweep"  # string: server seconds the next provider sweep is due

# set of run ids with a submission window or a delayed start (seedq/windows.py): the
# tick's time step looks at these only; a run leaves it when cancelled or finished
TIMED_RUNS = PREFIX + "runs:timed"


def schedule_firing(name: str, fired_at: str) -> str:
    """String: the id of the task that started schedule ``name``'s firing at ``fired_at``
    (ISO time), so a second beat's message for the same firing starts nothing. TTL:
    :data:`SCHEDULE_FIRING_TTL_S`."""
    return f"{PREFIX}schedule:{name}:{fired_at}"


def schedule_task(task_id: str) -> str:
    """String: the firing (ISO time) the scheduled-run task ``task_id`` claimed, so that
    the same message delivered again hours later resumes that firing, not a later one.
    TTL: :data:`SCHEDULE_FIRING_TTL_S`."""
    return f"{PREFIX}schedule-task:{task_id}"


SCHEDULE_FIRING_TTL_S = 7 * 24 * 3600  # far longer than any beat would lag behind a firing


# -- run notifications (seedq/notify.py, worker/notify.py) ----------------------------

# set of run ids the tick watches for an event to announce; a run enters when the tick
# first sees it (by NOTIFY_CURSOR) and leaves once finished and told. No TTL.
NOTIFY_WATCH = PREFIX + "notify:watch"
# string: the created_at (seconds, the RUNS score) of the newest run the tick has seen;
# runs created after it are watched. No TTL.
NOTIFY_CURSOR = PREFIX + "notify:cursor"


def run_notified(run_id: str, event_key: str) -> str:
    """String, SET NX: one event of a run is announced once: ``sending:<held until,
    seconds>`` while a worker sends it, then ``sent`` or ``failed``. TTL:
    :data:`NOTIFIED_TTL_S`."""
    return f"{PREFIX}run:{run_id}:notified:{event_key}"


NOTIFIED_TTL_S = 30 * 24 * 3600  # past it, a run still paused for the same reason is told again


# -- worker heartbeats (seedq/leases.py, worker/heartbeat.py) ------------------------

# set of worker-process ids that may hold jobs: entered by each heartbeat and each message
# received, left when the tick reaps the process (its heartbeat gone) or it stops cleanly.
# No TTL: the tick empties it of the dead.
WORKERS = PREFIX + "workers"


def worker_alive(worker_id: str) -> str:
    """String: a worker process's heartbeat. TTL: ``heartbeat_s`` (PX), renewed every
    third of it by a thread of that process; gone means the process is dead."""
    return f"{PREFIX}worker:{worker_id}:alive"


def worker_held(worker_id: str) -> str:
    """Hash: the job messages a worker process has received and not finished, task id ->
    ``eta|job_id`` (eta in seconds, 0 for none). No TTL: emptied once the tick has sent
    again what a dead process held, or when it stops cleanly; a field leaves when its
    task ends."""
    return f"{PREFIX}worker:{worker_id}:held"


def worker_reaping(worker_id: str) -> str:
    """String: a tick is sending again what a dead worker process held. TTL:
    ``REAP_CLAIM_MS``; a tick that dies midway leaves it to lapse, and the next tick
    claims the process again (its held messages are forgotten only once sent)."""
    return f"{PREFIX}worker:{worker_id}:reaping"


REAP_CLAIM_MS = 10_000  # far longer than a tick's sends; short beside a lease
# String: when (epoch seconds) the tick is next to look for jobs whose message is nowhere
# (seedq.leases.Leases.orphan_check_due), set when a dead worker is reaped. No TTL:
# deleted by the check.
ORPHAN_CHECK_AT = PREFIX + "orphan-check-at"


# string: server seconds of the last retention pass (worker/retention.py), which archives
# ended runs and prunes old ones a bounded step at a time. No TTL (one small string).
LAST_RETENTION = PREFIX + "tick:last_retention"
