"""The submit step, at most once: a job is enqueued at the provider only from
``registered``, after an atomic move to ``submitting`` that records what is sent and
when. A job found still ``submitting`` (a crash, a lost answer) is reconciled against
the provider's lists (the active rows, then the newest pages of the model's history),
and sent again only once they prove it never arrived.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from provider import errors as pe
from provider.models import Generation
from seedq.budget import admitted_may_start
from seedq.contract import ADMITTING, TASK_SUBMIT, JobState
from worker.errors import RunPaused
from worker.history import PAGE_SIZE, read_on, window_start
from worker.inputs import InputRules, publish_inputs
from worker.job import DONE, Job, Next
from worker.reconcile import Reconciled, Verdict, kept_params, matches, reconcile
from worker.retention import delivered_before
from worker.runtime import Runtime
from worker.throttled_calls import reported, wait_turn

log = logging.getLogger(__name__)

ACTIVE_STEP = 0  # a pass's first call lists the active rows; step n ≥ 1 reads history page n
LIST_TRIES = 3  # tries of each list call in one reconcile pass (see _list_step)
RECONCILE_FIELD = "reconcile_pass"  # a job's unfinished reconcile pass (see ListPass)
RECHECK_S = 5.0


def grace_s(rt: Runtime) -> float:
    """How long an unanswered enqueue may still be in flight: past it, absent is absent.
    Never shorter than the client's own timeout, whatever the setting says."""
    return max(rt.settings.reconcile_grace_s, rt.settings.http_timeout_s + 1.0)


def load(rt: Runtime, run_id: str, job_id: str) -> Job | None:
    job = Job.parse(job_id, rt.store.job(job_id))
    if job is None or job.run_id != run_id:
        log.info("job %s: no longer in run %s; message ignored", job_id, run_id)
        return None
    return job


def submit_job(rt: Runtime, run_id: str, job_id: str) -> Next:
    job = load(rt, run_id, job_id)
    if job is None:
        return DONE
    if job.state is JobState.SUBMITTING:
        # An enqueue that got an answer (even an error) is no longer in flight.
        settled = job.raw.get("send_settled") == "1"
        return reconcile_job(rt, job, grace=0.0 if settled else grace_s(rt))
    if job.state is not JobState.REGISTERED:
        return DONE  # already past this step: a repeated message
    status = rt.store.run_status(run_id) or ""
    if status not in ADMITTING and not admitted_may_start(status, rt.store.run_reason(run_id)):
        # Paused or cancelled: give the slot back; the job waits for a resume. A budget
        # pause is not one of these: this job's estimate is reserved inside the cap.
        rt.admission.requeue(run_id, job_id, int(job.spec.get("priority", 0)))
        return DONE
    if delivered_before(rt, job):  # its record pruned, its clip kept: never paid twice
        return DONE
    wait = wait_turn(rt.submit_throttle)
    if wait > 0:
        return Next(TASK_SUBMIT, wait)  # the global enqueue budget is spent for now
    sent = publish_inputs(job.params, rt.publisher, InputRules.from_settings(rt.settings))
    moved = rt.store.move(
        job_id,
        run_id,
        JobState.SUBMITTING,
        expect=[JobState.REGISTERED],
        sent_params=json.dumps(kept_params(sent), sort_keys=True),  # no URL credentials
        submit_started_at=rt.now(),
        send_settled=0,
    )
    if not moved.ok:
        return DONE  # another worker took it first
    return _enqueue(rt, job, sent)


def _enqueue(rt: Runtime, job: Job, sent: dict[str, object]) -> Next:
    rt.store.count_calls(job.id, 1)
    try:
        created = reported(rt.submit_throttle, lambda: rt.provider.enqueue(job.model, sent))
    except pe.ProviderError as exc:
        return _enqueue_failed(rt, job, exc)
    if not created:
        _back_to_registered(rt, job)
        raise pe.MalformedResponse("enqueue answered with no generation")
    return _adopt(rt, job, created[0].generation_id, reconciled=False)


def _enqueue_failed(rt: Runtime, job: Job, exc: pe.ProviderError) -> Next:
    """A failed enqueue: look for what it may have created, or undo and raise."""
    made = pe.creation(exc)
    if made is pe.Creation.UNKNOWN:
        log.warning("job %s: enqueue outcome unknown (%s); reconciling", job.id, exc)
        return Next(TASK_SUBMIT, RECHECK_S)
    if made is pe.Creation.LISTED:
        rt.store.update_job(job.id, send_settled=1)
        after = reconcile_job(rt, _reload(rt, job), grace=0.0, resend=False)
        if _reload(rt, job).state is not JobState.REGISTERED:
            # Adopted, left for an operator, or still undecided (the list had to wait
            # for a turn): the reconcile's own next step, never a job left unscheduled.
            return after
        raise exc  # provably not created (now registered again): retry with backoff
    _back_to_registered(rt, job)
    if isinstance(exc, pe.RunFatalError):
        rt.admission.requeue(job.run_id, job.id, int(job.spec.get("priority", 0)))
        raise RunPaused(str(exc)) from None
    raise exc


def _reload(rt: Runtime, job: Job) -> Job:
    return Job.parse(job.id, rt.store.job(job.id)) or job


def _back_to_registered(rt: Runtime, job: Job) -> None:
    rt.store.move(job.id, job.run_id, JobState.REGISTERED, expect=[JobState.SUBMITTING])


def _adopt(rt: Runtime, job: Job, generation_id: str, *, reconciled: bool) -> Next:
    # Claim atomically: twin jobs reconciled at once may both have seen it unowned.
    if not rt.store.claim_generation(generation_id, job.id):
        return Next(TASK_SUBMIT, RECHECK_S)  # another job took it: look again
    moved = rt.store.move(
        job.id,
        job.run_id,
        JobState.SUBMITTED,
        expect=[JobState.SUBMITTING],
        generation_id=generation_id,
        submitted_at=rt.now(),
        reconciled=int(reconciled),
    )
    if not moved.ok:
        log.warning(
            "job %s: generation %s found but job is %s", job.id, generation_id, moved.before
        )
        if moved.before == JobState.CANCELLED:
            _cancel_orphan(rt, job, generation_id)
        return DONE
    rt.leases.renew([job.id])
    return DONE  # the tick's sweep tracks it from here: one list call for every job in flight


def _cancel_orphan(rt: Runtime, job: Job, generation_id: str) -> None:
    """The job was cancelled while its enqueue was under way: cancel what it created."""
    rt.store.count_calls(job.id, 1)
    try:
        rt.provider.cancel(generation_id)
    except pe.ProviderError as exc:
        log.warning("job %s: could not cancel generation %s: %s", job.id, generation_id, exc)


@dataclass
class ListPass:
    """A reconcile pass: the next list call to make and the generations matching the
    job so far. Kept in the job's record (``reconcile_pass``) under the send it belongs
    to, so a pass cut short by a wait for a turn or a failed call resumes where it
    stopped: started over each time, it would rarely finish when the poll budget is
    contended (a turn per call), and each failed pass would spend a retry."""

    send: str  # submit_started_at of the send being reconciled
    since: float  # when its first list was made
    step: int = ACTIVE_STEP  # the next call: the active rows, then history page ``step``
    found: dict[str, dict[str, Any]] = field(default_factory=dict)
    fails: int = 0  # failed tries of the call being made, across waits for a turn

    @classmethod
    def of(cls, rt: Runtime, job: Job) -> ListPass:
        send = job.raw.get("submit_started_at", "")
        kept = json.loads(job.raw.get(RECONCILE_FIELD) or "{}")
        if kept.get("send") != send or "step" not in kept:
            # Another send's pass, or one kept by an older seedq (five status lists):
            # a fresh pass, whose later start only makes absence harder to prove.
            return cls(send, rt.now())
        return cls(
            send,
            float(kept["since"]),
            int(kept["step"]),
            dict(kept["found"]),
            int(kept.get("fails", 0)),
        )

    def save(self, rt: Runtime, job_id: str) -> None:
        rt.store.update_job(job_id, **{RECONCILE_FIELD: json.dumps(asdict(self), sort_keys=True)})


Listed = tuple[list[Generation], bool]  # rows of one call, and whether another must follow


def list_candidates(rt: Runtime, job: Job) -> tuple[list[Generation], float] | float:
    """The provider's generations matching the job and when the pass began listing
    them, or seconds to wait for a turn (the pass resumes then; see :class:`ListPass`).

    Never one unbounded list: the active rows (``GET /api/ai/queue``, bounded by what
    is in flight), then pages of the model's history (``GET /api/ai/generations``,
    newest first, every status) down to the first row enqueued before the send began
    (:mod:`worker.history`): a page or two however long the account's history. The
    browse view holds in-flight rows too; the active list first costs one bounded call
    and covers a browse view that lags behind the queue, where a generation just
    created is most likely to be. A generation seen in both is one candidate, not an
    ambiguity for an operator.

    Every list call takes its own turn of the poll budget and reports its outcome, so
    reconciling respects the global rate and a breaker probe granted here is answered."""
    progress = ListPass.of(rt, job)
    started_at = job.number("submit_started_at")
    since = window_start(started_at)
    finished = False
    try:
        while True:
            listed = _list_step(rt, job, _step_call(rt, job, progress.step, since), progress)
            if isinstance(listed, float):
                return listed
            rows, more = listed
            for gen in rows:
                if matches(
                    gen, model=job.model, sent=job.sent_params, started_at=started_at, now=rt.now()
                ):
                    progress.found[gen.generation_id] = kept_generation(gen)
            if not more:
                finished = True
                break
            progress.step += 1
    finally:
        if not finished:
            progress.save(rt, job.id)
    rt.store.clear_job_fields(job.id, RECONCILE_FIELD)
    return [Generation.model_validate(g) for g in progress.found.values()], progress.since


def _step_call(rt: Runtime, job: Job, step: int, since: float) -> tuple[str, Callable[[], Listed]]:
    """The provider call of one step of a pass, and its endpoint name for the metrics."""
    if step == ACTIVE_STEP:
        return "list", lambda: (rt.provider.list(model=job.model).generations, True)

    def page() -> Listed:
        got = rt.provider.history(page=step, page_size=PAGE_SIZE, model=job.model)
        return list(got.generations), read_on(got, since=since)

    return "history", page


def kept_generation(gen: Generation) -> dict[str, Any]:
    """A matched generation as an unfinished pass keeps it in the job store: its echoed
    presigned input URLs and its result URL without signatures or session tokens (the
    same credentials :func:`kept_params` keeps out of ``sent_params``)."""
    return kept_params(gen.model_dump(mode="json"))


def _list_step(
    rt: Runtime, job: Job, call: tuple[str, Callable[[], Listed]], progress: ListPass
) -> Listed | float:
    """One list call of the pass, a transient failure tried again at once.

    A reconcile needs every call of its pass. Were one failed call to end the pass, a
    provider failing a call in three would rarely let a pass through, each failed pass
    would spend one of the job's retries, and a job whose generation may exist would
    fail on noise, its clip paid for and never delivered. Each try takes its own turn,
    and a turn that must wait ends the pass as a wait (the job comes back then), unless
    the breaker opened: then the failure ends it and spends a retry, so an outage stays
    bounded. The tries are counted across such waits (``progress.fails``), so a call
    that keeps failing spends the job's retries however the turns fall.
    """
    endpoint, request = call
    failure: pe.TransientProviderError | None = None
    while True:
        wait = wait_turn(rt.poll_throttle)
        if wait > 0:
            if failure is not None and rt.poll_throttle.state()["breaker"] != "closed":
                progress.fails = 0
                raise failure
            return wait
        rt.store.count_calls(job.id, 1)
        try:
            listed = reported(rt.poll_throttle, request, endpoint)
        except pe.TransientProviderError as exc:
            failure = exc
            progress.fails += 1
            if progress.fails >= LIST_TRIES:
                progress.fails = 0  # the retry this spends gets fresh tries
                raise
            continue
        progress.fails = 0
        return listed


def reconcile_job(rt: Runtime, job: Job, *, grace: float, resend: bool = True) -> Next:
    """Decide a ``submitting`` job from the provider's list (see worker.reconcile).

    ``resend``: when it proves absent, queue the submit again (the caller may prefer to
    retry with backoff instead)."""
    listed = list_candidates(rt, job)
    if isinstance(listed, float):
        return Next(TASK_SUBMIT, listed)
    candidates, since = listed
    taken = {
        g.generation_id
        for g in candidates
        if rt.store.job_for_generation(g.generation_id) not in (None, job.id)
    }
    decided: Reconciled = reconcile(
        candidates,
        model=job.model,
        sent=job.sent_params,
        started_at=job.number("submit_started_at"),
        now=rt.now(),
        grace_s=grace,
        taken=taken,
    )
    if decided.verdict is Verdict.FOUND:
        return _adopt(rt, job, decided.matches[0].generation_id, reconciled=True)
    if decided.verdict is Verdict.AMBIGUOUS:
        ids = ", ".join(g.generation_id for g in decided.matches)
        reason = (
            f"needs an operator: several generations match this job ({ids}); "
            "none was adopted and nothing was sent again"
        )
        moved = rt.store.move(
            job.id,
            job.run_id,
            JobState.FAILED,
            expect=[JobState.SUBMITTING],
            error=reason,
            needs_operator=1,
            failed_step="submit",
        )
        return Next(failed=reason) if moved.ok else DONE
    if decided.verdict is Verdict.ABSENT and since - job.number("submit_started_at") <= grace:
        # The pass began listing inside the grace time: a generation created after its
        # first lists, still queued, would have been missed. Absence needs a later pass.
        decided = Reconciled(Verdict.WAIT)
    if decided.verdict is Verdict.WAIT:
        return Next(TASK_SUBMIT, RECHECK_S)
    log.info("job %s: provably never created; sending again", job.id)
    _back_to_registered(rt, job)
    return Next(TASK_SUBMIT, 0.0) if resend else DONE
