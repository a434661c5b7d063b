"""Credentials carried in URL query strings: the one list, and the ways to take them out.

A presigned or tokenised URL (an input image written in a manifest, one the worker
presigns, a result link) proves access to whoever holds it. The URL itself is sent to
the provider, and the job spec in Redis keeps it for a resend; everything persisted or
shown beside it (sidecars, reports, logs, task reasons, ``sent_params``) goes through
one of these functions, which all read :data:`CREDENTIAL_PARAMS`.

- :func:`strip_credentials`: the parameters removed, the rest byte for byte (what two
  sends are compared on).
- :func:`redact_credentials`: each value replaced, in any text (a log line, an error).
- :func:`redacted_params`: a job's parameters as shown (sidecar, report, resume proof).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED = "[redacted]"
# Query parameters that are, carry or prove a credential (lower case): S3 SigV4 and
# V2, CloudFront, GCS, Azure SAS, and the generic names of API keys and OAuth tokens.
# The access key id (X-Amz-Credential, AWSAccessKeyId) is not secret by itself, but it
# names whose keys signed and is no business of a report reader.
CREDENTIAL_PARAMS = frozenset(
    {
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "awsaccesskeyid",
        "signature",
        "policy",
        "key-pair-id",
        "x-goog-signature",
        "x-goog-credential",
        "googleaccessid",
        "sig",
        "token",
        "access_token",
        "id_token",
        "refresh_token",
        "key",
        "api_key",
        "apikey",
        "password",
        "secret",
    }
)
# ``name=value`` of a credential parameter inside any text, the name possibly
# percent-encoded as a whole (``X%2DAmz%2DSignature`` is rare but legal): what follows
# ``?`` or ``&`` up to the next ``&``, ``#``, quote, space or end.
_IN_TEXT = re.compile(
    r"(?i)(?<=[?&;])(" + "|".join(re.escape(n) for n in sorted(CREDENTIAL_PARAMS)) + r")="
    r"[^&#\s\"'<>]*"
)


def _is_credential(pair: str) -> bool:
    return unquote(pair.split("=", 1)[0]).strip().lower() in CREDENTIAL_PARAMS


def strip_credentials(url: str) -> str:
    """``url`` without its credential query parameters; the others are kept byte for
    byte, so both sides of a comparison strip the same way."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.query:
        return url
    pairs = parts.query.split("&")
    kept = [p for p in pairs if not _is_credential(p)]
    return url if len(kept) == len(pairs) else urlunsplit(parts._replace(query="&".join(kept)))


def redact_credentials(text: str) -> str:
    """``text`` with the value of every credential query parameter in it replaced."""
    if "=" not in text:
        return text
    redacted = _IN_TEXT.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    # A name written percent-encoded escapes the pattern: decode and judge each pair.
    return _redact_encoded_names(redacted) if "%" in redacted else redacted


def _redact_encoded_names(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        pair = match.group(0)
        return pair.split("=", 1)[0] + "=" + REDACTED if _is_credential(pair) else pair

    return re.sub(r"(?<=[?&;])[^=&#\s\"'<>]*%[^=&#\s\"'<>]*=[^&#\s\"'<>]*", one, text)


def redacted_params(params: dict[str, Any]) -> dict[str, Any]:
    """A job's parameters as they may be shown: every credential in a text value
    replaced (the URL stays readable: which object, which host)."""
    return {k: redact_credentials(v) if isinstance(v, str) else v for k, v in params.items()}
