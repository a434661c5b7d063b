"""Killing and retrying a stuck generation (worker.stuck decides), at most once per job
and paid like an enqueue: recorded before it is sent, never sent twice on a lost answer.

The tick's sweep sees a generation ``processing`` for ``stuck_after_s`` in the list it
makes anyway, and sends the job's track task; the track step confirms it with its GET
and comes here.

1. The job moves ``submitted → retrying`` by compare-and-set, and only while it still
   follows the generation judged and was never retried (``JobStore.move_when``),
   recording the generation being retried (``retry_of``) and when
   (``retry_started_at``), and reserving one more generation's estimate against the
   run's budget (``reserve_more``). Only the worker whose move succeeded sends
   ``POST /api/ai/queue/{id}/retry``.
2. Answered: the new generation is claimed (``seedq:gen:{id}``) and the job moves back
   to ``submitted`` pointing at it (``generation_id``), the killed one kept in
   ``stuck_generation_id``, ``stuck_retries=1``. The in-flight slot and its lease are
   kept throughout: the provider runs one generation for the job before and after.
3. The answer was lost (timeout, dropped connection, 502/504), or the job is found
   ``retrying`` (a crash, a redelivered message, an expired lease): nothing is sent. The
   account's history (``GET /api/ai/generations``, newest first, read back only to the
   retry's send) is searched for the row whose ``retried_from_id`` is the killed id: one
   is adopted as in 2; none, once the grace time of an unanswered call is over, proves
   the retry never arrived (back to ``submitted``, reservation returned: the next sweep
   decides again); several are left to an operator. A job an operator cancelled
   meanwhile has what its retry made cancelled too.
4. Refused before anything was made (429, connection refused, 401/402): back to
   ``submitted``, reservation returned, tried again later. Refused for good (400, 404:
   for one, it succeeded meanwhile): noted, and tracked again at once, so a clip that
   succeeded is delivered and one still processing is given up (5).
5. Given up (the retry stuck too, or the retry was refused): ``stuck_cancel_of`` is
   recorded, then the generation is cancelled (``DELETE``) so it stops costing. The
   track step (or a completion event) that then sees it cancelled, or still running,
   fails the job with the reason (its reservation returned, as for any job that made no
   clip); one that succeeded meanwhile is delivered as usual.

What a crash costs: between 1 and the send, the history proves the retry absent after
the grace time and it is sent then; after the send, step 3 finds it. Nothing is lost
and the retry is paid at most once.
"""

from __future__ import annotations

import logging
from functools import partial

from provider import errors as pe
from provider.models import Generation
from seedq.contract import ADMITTING, TASK_TRACK, JobState
from seedq.errors import TransientError
from seedq.store import STUCK_FAILURES, STUCK_RETRIES
from worker.errors import RunPaused
from worker.history import PAGE_SIZE, read_on, window_start
from worker.job import DONE, Job, Next
from worker.reconcile import Reconciled, Verdict
from worker.runtime import Runtime
from worker.stuck import STILL_RUNNING, Stuck, find_retry, is_stuck, judge, stuck_reason
from worker.submitting import RECHECK_S, grace_s
from worker.throttled_calls import reported, wait_turn

log = logging.getLogger(__name__)

# A lost retry's row is among those enqueued since it was sent: a page. A provider
# that ignored the order would otherwise have the search read all of a long history.
MAX_HISTORY_PAGES = 10
# A retry proven applied (its killed generation cancelled) whose new row the history has
# not shown for this long goes to an operator rather than waiting for ever.
LAGGING_RETRY_S = 30 * 60.0


def _reload(rt: Runtime, job: Job) -> Job:
    return Job.parse(job.id, rt.store.job(job.id)) or job


def handle_stuck(rt: Runtime, job: Job, gen: Generation) -> Next | None:
    """The track step's turn with a running generation: what to do when it is stuck,
    None when it is not (or its retry waits for the run to admit again)."""
    now, stuck_after_s = rt.now(), rt.settings.stuck_after_s
    if not is_stuck(gen, now=now, stuck_after_s=stuck_after_s):
        return None
    verdict = judge(
        gen,
        now=now,
        stuck_after_s=stuck_after_s,
        retried=bool(job.raw.get("stuck_generation_id")),
        refused=job.raw.get("retry_refused_of") == gen.generation_id,
        may_retry=rt.store.run_status(job.run_id) in ADMITTING,
    )
    if verdict is Stuck.RETRY:
        return retry_stuck(rt, job, gen.generation_id)
    if verdict is Stuck.GIVE_UP:
        return give_up(rt, job, gen.generation_id)
    return None


def retry_stuck(rt: Runtime, job: Job, generation_id: str) -> Next:
    """Steps 1 and 2: record the retry, send it once, adopt what it made."""
    wait = wait_turn(rt.submit_throttle)  # a retry is an enqueue: the enqueue budget
    if wait > 0:
        return Next(TASK_TRACK, wait)
    one_more = job.number("est_cost")  # the admission's estimate of one generation
    moved = rt.store.move_when(
        job.id,
        job.run_id,
        JobState.RETRYING,
        expect=[JobState.SUBMITTED],
        # Still on the generation judged stuck, never retried: two track tasks (the
        # sweep sends one per poll interval) may both judge it; one retries it, and the
        # other must not retry the generation it read, killed and replaced by then.
        when={"generation_id": generation_id, "stuck_generation_id": ""},
        retry_of=generation_id,
        retry_started_at=rt.now(),
        retry_settled=0,
        stuck_est_cost=one_more,
        reserve_more=one_more,
    )
    if not moved.ok:
        return DONE  # moved on meanwhile (finished, cancelled, retried by another worker)
    log.warning(
        "job %s: generation %s stuck processing for %.0f s; killing and retrying it",
        job.id,
        generation_id,
        rt.settings.stuck_after_s,
    )
    job = _reload(rt, job)
    rt.store.count_calls(job.id, 1)
    try:
        created = reported(rt.submit_throttle, lambda: rt.provider.retry(generation_id), "retry")
    except pe.ProviderError as exc:
        return _retry_failed(rt, job, generation_id, exc)
    return adopt_retry(rt, job, created.generation_id, reconciled=False)


def _retry_failed(rt: Runtime, job: Job, generation_id: str, exc: pe.ProviderError) -> Next:
    """A failed retry call: look for what it may have made, or undo it."""
    made = pe.creation(exc)
    if made is pe.Creation.UNKNOWN:
        log.warning("job %s: retry outcome unknown (%s); looking for it", job.id, exc)
        return Next(TASK_TRACK, RECHECK_S)
    if made is pe.Creation.LISTED:
        rt.store.update_job(job.id, retry_settled=1)
        after = resolve_retry(rt, _reload(rt, job))
        now = _reload(rt, job)
        if now.state is JobState.SUBMITTED and now.generation_id == generation_id:
            raise exc  # provably not applied, the job undone: tried again after a backoff
        return after  # adopted, left to an operator, or waiting for a turn to look
    if isinstance(exc, pe.RunFatalError):
        _undo(rt, job)
        raise RunPaused(str(exc)) from None
    if isinstance(exc, pe.PermanentJobError):
        log.warning("job %s: retry of %s refused: %s", job.id, generation_id, exc)
        _undo(rt, job, retry_refused_of=generation_id, retry_refused=str(exc)[:300])
        return Next(TASK_TRACK, 0.0)  # look again: succeeded meanwhile, or give up
    _undo(rt, job)  # refused before anything was made
    raise exc


def _undo(rt: Runtime, job: Job, **fields: str | int | float) -> None:
    """Back to ``submitted`` on the generation that was to be retried: nothing was made,
    so the reservation of the retry is returned."""
    rt.store.move(
        job.id,
        job.run_id,
        JobState.SUBMITTED,
        expect=[JobState.RETRYING],
        retry_of="",
        stuck_est_cost=0,
        reserve_more=-job.number("stuck_est_cost"),
        **fields,
    )


def adopt_retry(rt: Runtime, job: Job, generation_id: str, *, reconciled: bool) -> Next:
    """Step 2: the job follows the new generation; the killed one is kept beside it."""
    killed = job.raw.get("retry_of", "")
    if not rt.store.claim_generation(generation_id, job.id):
        # Only this job retried ``killed``: another owner means a damaged ledger.
        owner = rt.store.job_for_generation(generation_id)
        return _needs_operator(
            rt, job, f"the retry of {killed}, {generation_id}, is claimed by {owner}"
        )
    moved = rt.store.move(
        job.id,
        job.run_id,
        JobState.SUBMITTED,
        expect=[JobState.RETRYING],
        generation_id=generation_id,
        stuck_generation_id=killed,
        stuck_retries=1,
        retried_at=rt.now(),
        retry_reconciled=int(reconciled),
        retry_of="",
        count=STUCK_RETRIES,
    )
    if not moved.ok:
        log.warning("job %s: retry %s made but job is %s", job.id, generation_id, moved.before)
        if moved.before == JobState.CANCELLED:
            _cancel(rt, job, generation_id)  # cancelled by an operator meanwhile
        return DONE
    log.info("job %s: stuck %s retried as %s", job.id, killed, generation_id)
    rt.leases.renew([job.id])
    return DONE  # the sweep tracks the new generation like any other


def resolve_retry(rt: Runtime, job: Job) -> Next:
    """Step 3: a ``retrying`` job whose retry may have been sent; found, never resent."""
    killed = job.raw.get("retry_of", "")
    sent_at = job.number("retry_started_at")
    read = _history_since(rt, job, sent_at)
    if isinstance(read, float):
        return Next(TASK_TRACK, read)
    rows, first_read_at = read
    taken = frozenset(
        r.generation_id
        for r in rows
        if rt.store.job_for_generation(r.generation_id) not in (None, job.id)
    )
    decided = find_retry(
        rows,
        retried_id=killed,
        sent_at=sent_at,
        now=first_read_at,
        grace_s=grace_s(rt),
        settled=job.raw.get("retry_settled") == "1",
        taken=taken,
    )
    if job.state is JobState.CANCELLED:
        return _cancel_retried(rt, job, decided)
    if decided.verdict is Verdict.FOUND:
        return adopt_retry(rt, job, decided.matches[0].generation_id, reconciled=True)
    if decided.verdict is Verdict.AMBIGUOUS:
        ids = ", ".join(g.generation_id for g in decided.matches)
        return _needs_operator(rt, job, f"several generations were retried from {killed} ({ids})")
    if decided.verdict is Verdict.WAIT:
        return Next(TASK_TRACK, RECHECK_S)
    lagging = _killed_by_a_retry(rt, job, killed)
    if lagging is not None:
        return lagging
    log.info("job %s: the retry of %s never arrived; back to tracking it", job.id, killed)
    _undo(rt, job)
    return Next(TASK_TRACK, 0.0)


def _killed_by_a_retry(rt: Runtime, job: Job, killed: str) -> Next | None:
    """Before a retry is judged never arrived: the provider cancels the generation it
    retries, so the killed one seen ``cancelled`` (not by seedq's own give-up) proves the
    retry landed, whatever a lagging history shows yet; undoing then would leave the
    retry's paid generation unowned. Waits for the row, and hands the job to an
    operator if it never shows. None when the killed generation says nothing of it."""
    if job.raw.get("stuck_cancel_of") == killed:
        return None
    wait = wait_turn(rt.poll_throttle)
    if wait > 0:
        return Next(TASK_TRACK, wait)
    rt.store.count_calls(job.id, 1)
    status = reported(rt.poll_throttle, partial(rt.provider.get, killed), "get").status
    if status != "cancelled":
        return None
    if rt.now() - job.number("retry_started_at") <= LAGGING_RETRY_S:
        return Next(TASK_TRACK, RECHECK_S)
    return _needs_operator(
        rt,
        job,
        f"{killed} was cancelled by its retry, but no generation retried from it has "
        f"appeared in the history in {LAGGING_RETRY_S / 60:.0f} min",
    )


def _cancel_retried(rt: Runtime, job: Job, decided: Reconciled) -> Next:
    """An operator cancelled the job while its retry was unanswered: what the retry made
    is cancelled too, rather than left running unowned."""
    if decided.verdict is Verdict.WAIT:
        return Next(TASK_TRACK, RECHECK_S)
    for made in decided.matches:
        _cancel(rt, job, made.generation_id)
    rt.store.update_job(job.id, retry_of="")
    return DONE


def _history_since(rt: Runtime, job: Job, sent_at: float) -> tuple[list[Generation], float] | float:
    """The job's model's rows of the account history back to the retry's send (where to
    stop is :mod:`worker.history`'s decision, as for a reconcile), and when the first
    page was read; or seconds to wait for a turn of the poll budget (the search starts
    over then: it is a page or two)."""
    first_read_at = rt.now()
    since = window_start(sent_at)
    rows: list[Generation] = []
    for page in range(1, MAX_HISTORY_PAGES + 1):
        wait = wait_turn(rt.poll_throttle)
        if wait > 0:
            return wait
        rt.store.count_calls(job.id, 1)
        call = partial(rt.provider.history, page=page, page_size=PAGE_SIZE, model=job.model)
        listed = reported(rt.poll_throttle, call, "history")
        rows.extend(listed.generations)
        if not read_on(listed, since=since):
            return rows, first_read_at
    raise TransientError(
        f"the retry's row is not within {MAX_HISTORY_PAGES} history pages of its send"
    )


def give_up(rt: Runtime, job: Job, generation_id: str) -> Next:
    """Step 5: cancel the generation, then let the track step see how it ended.

    The intent is recorded before the ``DELETE`` (a generation then seen cancelled was
    cancelled by seedq, even if the worker died before hearing the answer), and the
    answer after it (a generation seen still running then is only slow to stop; before
    it, the ``DELETE`` is sent again)."""
    rt.store.update_job(job.id, stuck_cancel_of=generation_id)
    _cancel(rt, job, generation_id, tolerate=False)
    rt.store.update_job(job.id, stuck_cancelled=generation_id)
    return Next(TASK_TRACK, 0.0)


def cancelled_for_stuck(job: Job, status: str) -> bool:
    """Whether the job's generation, in ``status``, is one seedq gave up on and
    cancelled: the job then fails for being stuck (:func:`fail_stuck`)."""
    intent = job.raw.get("stuck_cancel_of")
    if not intent or intent != job.generation_id:
        return False
    return status == "cancelled" or (
        status in STILL_RUNNING and job.raw.get("stuck_cancelled") == intent
    )


def fail_stuck(rt: Runtime, job: Job) -> Next:
    """The generation given up on is cancelled (or going): the job fails, with why. Like
    any job that made no clip, its reservation is returned: the provider charges for
    what it made."""
    generation_id = job.generation_id or ""
    reason = stuck_reason(
        stuck_after_s=rt.settings.stuck_after_s,
        generation_id=generation_id,
        killed_id=job.raw.get("stuck_generation_id") or None,
        refused=job.raw.get("retry_refused") or None,
    )
    moved = rt.store.move_when(
        job.id,
        job.run_id,
        JobState.FAILED,
        expect=[JobState.SUBMITTED],
        when={"generation_id": generation_id},
        error=reason,
        failed_step="generate",
        stuck_failed=1,
        count=STUCK_FAILURES,
    )
    if not moved.ok:
        return DONE
    log.warning("job %s failed: %s", job.id, reason)
    return Next(failed=reason)


def _needs_operator(rt: Runtime, job: Job, what: str) -> Next:
    reason = f"needs an operator: {what}; none was adopted and nothing was sent again"
    moved = rt.store.move(
        job.id,
        job.run_id,
        JobState.FAILED,
        expect=[JobState.RETRYING],
        error=reason,
        needs_operator=1,
        failed_step="track",
    )
    return Next(failed=reason) if moved.ok else DONE


def _cancel(rt: Runtime, job: Job, generation_id: str, *, tolerate: bool = True) -> None:
    """``DELETE`` a generation. A transient failure is raised (the step is tried again
    and decides afresh) unless ``tolerate``; a 404 or 400 means there is nothing left
    to cancel."""
    rt.store.count_calls(job.id, 1)
    try:
        rt.provider.cancel(generation_id)
    except pe.PermanentJobError as exc:
        log.info("job %s: generation %s not cancelled: %s", job.id, generation_id, exc)
    except pe.ProviderError as exc:
        if not tolerate:
            raise
        log.warning("job %s: could not cancel generation %s: %s", job.id, generation_id, exc)
