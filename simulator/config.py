"""The simulator's knobs: one pydantic model, built by the CLI or by tests, and updated
at run time through ``POST /_sim/config`` or :meth:`SimHandle.configure`.

Every change goes through :func:`updated_config`, which validates the whole result, so
a running simulator never holds an impossible configuration.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from simulator.errors import SimConfigError

Rate = float


class SimConfig(BaseModel):
    """Everything that shapes the simulator's behaviour; rates are probabilities 0..1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str | None = Field(
        default=None, description="Accepted bearer key; None accepts any non-empty key."
    )
    max_concurrency: int = Field(default=4, ge=1, description="Generations processing at once.")
    latency_s: tuple[float, float] = Field(
        default=(1.0, 3.0), description="Seconds a generation takes, drawn uniformly MIN..MAX."
    )
    url_ttl_s: float = Field(default=300.0, gt=0, description="Lifetime of a result URL.")
    download_s: float = Field(
        default=0.0,
        ge=0,
        description="Seconds a result download takes, its bytes sent in pieces over that "
        "time (each piece well within a client's read timeout): a slow delivery.",
    )
    fast: bool = Field(default=False, description="Serve cached clips per parameter class.")
    keepalive_s: float = Field(default=15.0, gt=0, description="SSE keep-alive interval.")
    seed: int | None = Field(default=None, description="Seed for every random choice.")
    schema_field: Literal["request_schema", "json_request_schema"] = Field(
        default="request_schema", description="Name of the schema field in model objects."
    )
    fps: int = Field(default=6, ge=1, le=30, description="Frame rate of rendered videos.")
    history: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description="Past generations the account starts with (and after a reset).",
    )
    model_patch: dict[str, Any] | None = Field(
        default=None,
        description="Top-level fields merged into every served model object (a field set "
        "to null replaces it): a provider whose model object changed shape, for tests.",
    )
    price_factor: float = Field(
        default=1.0,
        gt=0,
        description="Every price the model objects serve (and billing uses) is the shipped "
        "copy's times this: other than 1, the live prices differ from seedq's copy.",
    )
    # Faults on /api/* requests.
    error_rate: Rate = Field(default=0.0, ge=0, le=1, description="Share of 5xx answers.")
    rate_limit_rate: Rate = Field(default=0.0, ge=0, le=1, description="Share of 429 answers.")
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After of a 429, seconds.")
    echo_auth: bool = Field(
        default=False,
        description="5xx and 429 bodies quote the request's Authorization header, as a "
        "careless gateway might (leak tests).",
    )
    slow_rate: Rate = Field(default=0.0, ge=0, le=1, description="Share of slow answers.")
    slow_delay_s: float = Field(default=30.0, ge=0, description="Delay of a slow answer.")
    drop_rate: Rate = Field(
        default=0.0, ge=0, le=1, description="Share of connections closed before processing."
    )
    drop_after_rate: Rate = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of connections closed after the request took effect (lost answer).",
    )
    # Faults of generations.
    failure_rate: Rate = Field(default=0.0, ge=0, le=1, description="Share of failed generations.")
    stuck_rate: Rate = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of new generations stuck processing until cancelled or retried.",
    )
    stuck_retry_rate: Rate = Field(
        default=0.0, ge=0, le=1, description="The same, for generations made by a retry."
    )
    insufficient_credits: bool = Field(
        default=False, description="Refuse enqueues (402) and fail in-flight generations."
    )
    unrelated_event_rate: Rate = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Chance of an unrelated SSE event after each keep-alive or completion.",
    )

    @model_validator(mode="after")
    def _latency_ordered(self) -> SimConfig:
        low, high = self.latency_s
        if low < 0 or high < low:
            raise ValueError("latency_s must be MIN:MAX with 0 <= MIN <= MAX")
        if self.error_rate + self.rate_limit_rate + self.drop_rate + self.drop_after_rate > 1:
            raise ValueError("error, rate-limit and drop rates must add up to at most 1")
        return self


def updated_config(config: SimConfig, changes: dict[str, Any]) -> SimConfig:
    """``config`` with ``changes`` applied, validated as a whole."""
    try:
        return SimConfig.model_validate({**config.model_dump(), **changes})
    except ValidationError as exc:
        raise SimConfigError(_describe(exc)) from None


def parse_latency(text: str) -> tuple[float, float]:
    """``"0.2:0.5"`` -> ``(0.2, 0.5)``; a single number means a fixed latency."""
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise SimConfigError(f"latency must be MIN:MAX seconds, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or values[0] < 0 or values[1] < values[0]:
        raise SimConfigError(f"latency must be MIN:MAX seconds with 0 <= MIN <= MAX, got {text!r}")
    return values[0], values[1]


def parse_model_patch(text: str) -> dict[str, Any]:
    """``'{"pricing": null}'`` -> ``{"pricing": None}``: a JSON object, nothing else."""
    try:
        value = json.loads(text)
    except ValueError:
        raise SimConfigError(f"model patch must be a JSON object, got {text!r}") from None
    if not isinstance(value, dict):
        raise SimConfigError(f"model patch must be a JSON object, got {text!r}")
    return value


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
    )
