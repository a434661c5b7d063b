"""Finding the generation of a job whose enqueue may or may not have reached the
provider: pure matching of the provider's list against what the job sent.

What the job sent is kept (``sent_params``) without the credentials of its presigned
input URLs (:func:`kept_params`, :data:`seedq.credentials.CREDENTIAL_PARAMS`): the rest
of the URL (object, date to the second, expiry) still tells one send from another.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from provider.models import Generation
from seedq.credentials import strip_credentials

# How far before the recorded start an enqueued_at may lie (clock skew, whole seconds).
SKEW_S = 5.0


def kept_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of an enqueue as the job store keeps them (no URL credentials)."""
    return {k: strip_credentials(v) if isinstance(v, str) else v for k, v in params.items()}


class Verdict(StrEnum):
    FOUND = "found"  # exactly one generation matches: adopt it
    ABSENT = "absent"  # none matches and the send is long over: never created
    WAIT = "wait"  # none matches yet, but the send may still be under way
    AMBIGUOUS = "ambiguous"  # several match: an operator must choose


@dataclass(frozen=True, slots=True)
class Reconciled:
    verdict: Verdict
    matches: tuple[Generation, ...] = ()


def _same(sent: Any, echoed: Any) -> bool:
    if isinstance(sent, bool) or isinstance(echoed, bool):
        return sent is echoed
    if isinstance(sent, int | float) and isinstance(echoed, int | float):
        return float(sent) == float(echoed)
    if isinstance(sent, str) and isinstance(echoed, str):
        # A record kept by kept_params never has the signature; an older one may.
        return strip_credentials(sent) == strip_credentials(echoed)
    return bool(sent == echoed)


def matches(
    gen: Generation, *, model: str, sent: dict[str, Any], started_at: float, now: float
) -> bool:
    """Whether a listed generation is the one this job's enqueue created."""
    if gen.model_name not in (None, model):
        return False
    if gen.enqueued_at is not None and not (started_at - SKEW_S <= gen.enqueued_at <= now + SKEW_S):
        return False
    echoed = gen.params()
    return all(name in echoed and _same(value, echoed[name]) for name, value in sent.items())


def reconcile(
    generations: Iterable[Generation],
    *,
    model: str,
    sent: dict[str, Any],
    started_at: float,
    now: float,
    grace_s: float,
    taken: set[str] = frozenset(),  # type: ignore[assignment]
) -> Reconciled:
    """Decide from the provider's list; ``taken`` are generation ids other jobs own."""
    found = tuple(
        g
        for g in generations
        if g.generation_id not in taken
        and matches(g, model=model, sent=sent, started_at=started_at, now=now)
    )
    if len(found) == 1:
        return Reconciled(Verdict.FOUND, found)
    if len(found) > 1:
        return Reconciled(Verdict.AMBIGUOUS, found)
    return Reconciled(Verdict.ABSENT if now - started_at > grace_s else Verdict.WAIT)
