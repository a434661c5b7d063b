"""Finding the generation of a job whose enqueue may or may not have reached the
provider: pure matching of the provider's list against what the job sent.

What the job sent is kept (``sent_params``) without the signature and session token of
its presigned input URLs (:func:`kept_params`): those are credentials, and the rest of
the URL (object, credential scope, date to the second) still tells one send from another.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from provider.models import Generation

# How far before the recorded start an enqueued_at may lie (clock skew, whole seconds).
SKEW_S = 5.0
# Query parameters of presigned URLs that are (or prove) credentials: S3 SigV4 and V2, GCS.
SIGNATURE_PARAMS = frozenset(
    {"x-amz-signature", "x-amz-security-token", "signature", "x-goog-signature"}
)


def without_signature(url: str) -> str:
    """``url`` without its signature and session-token query parameters; the others are
    kept byte for byte, so both sides of a comparison strip the same way."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = parts.query.split("&")
    kept = [p for p in pairs if unquote(p.split("=", 1)[0]).lower() not in SIGNATURE_PARAMS]
    return url if len(kept) == len(pairs) else urlunsplit(parts._replace(query="&".join(kept)))


def kept_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of an enqueue as the job store keeps them (no URL credentials)."""
    return {k: without_signature(v) if isinstance(v, str) else v for k, v in params.items()}


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
        return without_signature(sent) == without_signature(echoed)
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
