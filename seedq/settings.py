"""The one settings object, read from the environment (``SEEDQ_*`` and ``OXEN_API_KEY``)
and an optional ``.env`` file.

Built only at an entry point (the CLI, the Celery app's first use); nothing reads the
environment at import time. Secrets are :class:`~pydantic.SecretStr` so they never
show in a repr, a log line or an exception.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self
from urllib.parse import unquote, urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from seedq.errors import ConfigError
from seedq.refs import S3Grant, parse_s3_allow

DEFAULT_MODEL = "bytedance-seedance-2-0-image-to-video"
DEFAULT_PROVIDER_URL = "https://hub.oxen.ai"
# The whole of one result download: the 2 GiB cap at 3.6 MB/s, a 30 MB clip at 50 kB/s.
DEFAULT_DOWNLOAD_DEADLINE_S = 600.0

# The placeholders of .env.example: a stack started with one of them runs on a secret
# anyone who has read this repository knows. Compared without case or padding.
PLACEHOLDERS = frozenset({"change-me", "change-me-too"})


class Settings(BaseSettings):
    """Every knob of seedq, one place. README.md lists them with their defaults."""

    model_config = SettingsConfigDict(
        env_prefix="SEEDQ_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,
    )

    broker_url: str | None = Field(
        default=None,
        description="Celery broker (redis://, amqp://). Unset: only `seedq run` starts, "
        "on an embedded in-memory broker.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis holding job state, limits and counters. Unset: in-process fakeredis.",
    )
    provider_url: str = Field(
        default=DEFAULT_PROVIDER_URL, description="Base URL of the Oxen.ai inference API."
    )
    oxen_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("OXEN_API_KEY", "SEEDQ_OXEN_API_KEY"),
        description="Oxen.ai API key, sent only as the bearer header.",
    )
    model: str = Field(
        default=DEFAULT_MODEL, description="Model id used when a manifest names none."
    )
    output: str = Field(
        default="seedq-output",
        description="Where videos go: s3://bucket/prefix or a local directory.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, moto); unset: AWS."
    )
    poll_interval_s: float = Field(
        default=15.0,
        gt=0,
        description="Interval of the sweep: one list call checks every generation in flight.",
    )
    sweep_tracks: int = Field(
        default=8,
        ge=0,
        description="Finished generations a sweep checks itself (a status call each: one "
        "that succeeded goes to delivery and its slot is refilled at once; a failure goes "
        "to its track task), within half a poll interval (2 s at most); the rest go to "
        "the track queue. 0: all of them.",
    )
    allow_private_urls: bool = Field(
        default=False,
        description="Turn the fetch guard off entirely: loopback/private/link-local URLs and "
        "plain http let through. For the demo and tests only, never in production.",
    )
    http_timeout_s: float = Field(default=30.0, gt=0, description="Timeout of one provider call.")
    input_root: Path | None = Field(
        default=None,
        description="Folder local input images must lie in (symlinks resolved); unset: "
        "the manifest's own folder.",
    )
    input_s3_allow: str = Field(
        default="",
        description="Buckets s3:// input images may come from, comma-separated `bucket` or "
        "`bucket/prefix`; empty: s3:// inputs are refused.",
    )
    # How long a presigned input link lives. The provider fetches the image when the
    # generation starts; our in-flight cap keeps that within minutes of the enqueue, the
    # generation itself takes 5-15 min, and one still processing after stuck_after_s
    # (45 min) is killed and sent again with a fresh link. Two hours covers a provider
    # queue of over an hour on top; a link that expired before a slow start costs one
    # retry, one that lives longer is one more hour a leaked link (the provider's logs,
    # its echo of the parameters) reads the object.
    input_url_expires_s: int = Field(
        default=2 * 3600,
        ge=60,
        le=7 * 24 * 3600,
        description="Lifetime of the presigned URLs of input images given to the provider.",
    )

    max_manifest_bytes: int = Field(
        default=256 * 1024 * 1024, gt=0, description="Largest manifest file accepted."
    )
    max_yaml_manifest_bytes: int = Field(
        default=16 * 1024 * 1024,
        gt=0,
        description="Largest YAML manifest accepted (read whole; a CSV one is streamed).",
    )
    auto_duration_estimate_s: int = Field(
        default=10,
        ge=4,
        le=15,
        description="Seconds counted for duration -1 (auto) in plans and cost estimates.",
    )

    retry_base_s: float = Field(
        default=5.0, ge=0, description="First retry delay; doubles per attempt, with jitter."
    )
    retry_max_delay_s: float = Field(default=300.0, gt=0, description="Longest retry delay.")
    retry_max_attempts: int = Field(default=10, ge=1, description="Attempts per step.")
    retry_max_total_s: float = Field(
        default=6 * 3600.0, gt=0, description="Give a step up after this long in retries."
    )
    max_video_bytes: int = Field(
        default=2 * 1024**3, gt=0, description="Largest result file downloaded."
    )
    download_deadline_s: float = Field(
        default=DEFAULT_DOWNLOAD_DEADLINE_S,
        gt=0,
        description="Longest one result download may take in all, headers included, "
        "however it trickles; past it the delivery is retried later.",
    )
    verify_tolerance_s: float = Field(
        default=1.0, ge=0, description="Allowed gap between requested and actual duration."
    )

    submit_rate: str = Field(
        default="2/s", description="Global budget of enqueue calls, e.g. 2/s or 100/min."
    )
    poll_rate: str = Field(
        default="20/s", description="Global budget of status and list calls, e.g. 20/s."
    )
    submit_burst: int = Field(
        default=1,
        ge=1,
        description="Enqueue calls that may go at once after a pause; 1: evenly spaced.",
    )
    breaker_threshold: int = Field(
        default=5,
        ge=1,
        description="Consecutive 5xx or timeouts that open the circuit breaker for all workers.",
    )
    breaker_cooldown_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds the open breaker holds every call before one probe is let through.",
    )
    max_in_flight: int = Field(
        default=50, ge=1, description="Generations queued or processing at the provider, at most."
    )
    reconcile_grace_s: float = Field(
        default=120.0,
        ge=0,
        description="How long an unanswered enqueue may still be in flight before an empty "
        "provider list proves it never arrived.",
    )
    lease_s: float = Field(
        default=300.0, gt=0, description="A job not heard of for this long is re-driven."
    )
    stuck_after_s: float = Field(
        default=2700.0,
        gt=0,
        description="A generation still processing this long after it started is killed and "
        "retried, once per job; stuck again, the job fails.",
    )

    schedules: Path | None = Field(
        default=None,
        description="YAML file of scheduled runs for Celery beat (docs/schedules.md).",
    )
    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Prometheus metrics port of a worker; 0: off."
    )
    exporter_port: int = Field(
        default=9464, ge=0, le=65535, description="Port of `seedq exporter`'s /metrics."
    )
    exporter_address: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address `seedq exporter` listens on; 0.0.0.0 inside a container.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="Worker log lines: text, or JSON with run_id and job_id."
    )
    notify_url: str | None = Field(
        default=None,
        description="Webhook told (JSON POST) when a run finishes, is paused by an error or "
        "reaches its budget. On the workers: every run; where a run is submitted: that run.",
    )
    notify_secret: SecretStr | None = Field(
        default=None,
        description="Key of the notifications' HMAC-SHA256 signature (X-Seedq-Signature).",
    )
    flower_basic_auth: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("FLOWER_BASIC_AUTH"),
        description="Flower's logins, user:password[,...]. Flower reads the variable itself; "
        "seedq only refuses to start with a placeholder or empty password in it.",
    )
    notify_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one POST.")
    notify_max_attempts: int = Field(
        default=8, ge=1, description="POSTs of one notification before it is given up."
    )
    heartbeat_s: float = Field(
        default=10.0,
        gt=0,
        description="A worker process not heard of for this long is dead, and the jobs it "
        "held are re-driven; each renews its heartbeat every third of it.",
    )
    retention_days: float = Field(
        default=30.0,
        ge=0,
        description="An ended, archived run is pruned from Redis this many days after it was "
        "created; 0: never by the tick (seedq prune still does).",
    )

    @field_validator(
        "broker_url", "redis_url", "s3_endpoint_url", "schedules", "notify_url", mode="before"
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("input_s3_allow")
    @classmethod
    def _grants_parse(cls, value: str) -> str:
        parse_s3_allow(value)  # a bad entry stops the process at start, naming the entry
        return value

    @field_validator("input_root", mode="before")
    @classmethod
    def _blank_root_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def input_s3_grants(self) -> tuple[S3Grant, ...]:
        return parse_s3_allow(self.input_s3_allow)

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> Self:
        """Every process reads the settings first: refusing here stops each of them (the
        workers, beat, Flower, ``seedq events``, the commands) before it connects."""
        weak = weak_secrets(self)
        if weak:
            raise PydanticCustomError(
                "weak_secret",
                "{weak}: refusing to start on a secret anyone can guess; put a real one "
                "in .env or the environment",
                {"weak": "; ".join(weak)},
            )
        return self

    @property
    def output_is_s3(self) -> bool:
        return self.output.startswith("s3://")

    @property
    def output_dir(self) -> Path:
        return Path(self.output).expanduser()

    def api_key_value(self) -> str | None:
        """The raw key, for the one place that builds the Authorization header."""
        return self.oxen_api_key.get_secret_value() if self.oxen_api_key else None

    def notify_secret_value(self) -> str | None:
        """The raw signing key, for the one place that signs a notification."""
        return self.notify_secret.get_secret_value() if self.notify_secret else None


# Settings whose variable is not SEEDQ_ + the field's name.
_ENV_NAMES = {"oxen_api_key": "OXEN_API_KEY", "flower_basic_auth": "FLOWER_BASIC_AUTH"}
# What every process of the pipeline (a worker, `seedq events`) reads: the broker, the
# job store and the provider. Without one it could only fail, over and over.
PIPELINE_NEEDS = ("broker_url", "redis_url", "oxen_api_key")


def env_name(field: str) -> str:
    """The environment variable that sets ``field``: ``redis_url`` -> ``SEEDQ_REDIS_URL``."""
    if field not in Settings.model_fields:
        raise KeyError(field)
    return _ENV_NAMES.get(field, f"SEEDQ_{field.upper()}")


def weak_secret(value: str) -> str | None:
    """Why ``value`` cannot be a secret (empty, or a placeholder of .env.example); None
    when it may be one. Pure: the one rule behind :func:`weak_secrets`."""
    said = value.strip()
    if not said:
        return "is empty"
    if said.lower() in PLACEHOLDERS:
        return f"is the placeholder {said!r} of .env.example"
    return None


def weak_secrets(settings: Settings) -> list[str]:
    """One phrase per secret of ``settings`` that is empty or a placeholder, naming its
    variable and never its value. A Redis URL without a password is no secret to judge
    (a local Redis without auth); one with an empty password is."""
    found = []
    for field in ("broker_url", "redis_url"):
        url = getattr(settings, field)
        password = _url_password(url) if url else None
        why = weak_secret(password) if password is not None else None
        if why:
            found.append(f"the password in {env_name(field)} {why}")
    for field in ("oxen_api_key", "notify_secret"):
        secret = getattr(settings, field)
        why = weak_secret(secret.get_secret_value()) if secret is not None else None
        if why:
            found.append(f"{env_name(field)} {why}")
    logins = settings.flower_basic_auth
    for login in logins.get_secret_value().split(",") if logins else ():
        why = weak_secret(login.partition(":")[2])
        if why:
            found.append(f"a password in FLOWER_BASIC_AUTH {why}")
            break
    return found


def _url_password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None  # not a URL: the connection says so, with its variable
    return None if password is None else unquote(password)


def invalid_settings(exc: ValidationError) -> list[str]:
    """One line per setting the environment gives a value pydantic rejects, by its
    variable's name (``SEEDQ_POLL_INTERVAL_S: Input should be ...``); never the value.
    A check of the whole (placeholder secrets) says its own variables."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        field = str(err["loc"][0]) if err["loc"] else ""
        if not field:
            lines.append(err["msg"])
            continue
        where = env_name(field) if field in Settings.model_fields else field.upper()
        lines.append(f"setting {where}: {err['msg']}")
    return lines


def require(settings: Settings, who: str, *fields: str) -> None:
    """Refuse to start ``who`` (a worker, ``seedq events``) without the settings it cannot
    work without: one ConfigError naming every one of ``fields`` that is unset, so that
    a forgotten ``.env`` costs one line, not a process that runs and fails every tick."""
    missing = [env_name(f) for f in fields if getattr(settings, f) is None]
    if not missing:
        return
    if len(missing) == 1:
        raise ConfigError(f"{missing[0]} is not set: {who} cannot start without it")
    names = ", ".join(missing[:-1]) + " and " + missing[-1]
    raise ConfigError(f"{names} are not set: {who} cannot start without them")


def load_settings(**overrides: object) -> Settings:
    """Build the settings at an entry point; keyword overrides win over the environment."""
    return Settings(**overrides)  # type: ignore[arg-type]
