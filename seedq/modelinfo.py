"""The model object (parameter schema and pricing) and the pure rules built on it.

Shared by the producer (validation before anything is sent, cost estimates), the
provider client (parsing ``GET /api/ai/models/{id}``) and the simulator (validating a
generation's parameters when it runs, as the real service does).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from seedq.errors import SeedqError

HIGH_RES = frozenset({"1080p", "4k"})
AUTO_DURATION = -1
MIN_DURATION_S = 4


class UnknownModelError(SeedqError):
    """No schema is known for this model id."""


def _number_or_none(value: object) -> float | None:
    """A price as a float; anything else (a string, an object) reads as "not given"."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class Pricing(BaseModel):
    """Per-output-second prices of a video model (any of them may be unknown).

    Read field by field: a price of a shape seedq does not know is "not given", never a
    reason to refuse the whole model object (the published schema keeps growing).
    """

    model_config = ConfigDict(extra="allow")

    method: str | None = "per_video_output_second"
    currency: str = "USD"
    cost_per_second_by_resolution: dict[str, float] | None = None
    cost_per_second: float | None = None
    cost_per_second_high_res: float | None = None
    cost_per_second_with_audio: float | None = None

    @field_validator(
        "cost_per_second", "cost_per_second_high_res", "cost_per_second_with_audio", mode="before"
    )
    @classmethod
    def _price(cls, value: object) -> float | None:
        return _number_or_none(value)

    @field_validator("cost_per_second_by_resolution", mode="before")
    @classmethod
    def _by_resolution(cls, value: object) -> dict[str, float] | None:
        if not isinstance(value, dict):
            return None
        prices = {str(k): _number_or_none(v) for k, v in value.items()}
        return {k: v for k, v in prices.items() if v is not None}

    @field_validator("method", "currency", mode="before")
    @classmethod
    def _text(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            return value
        return "USD" if info.field_name == "currency" else None

    @property
    def is_known(self) -> bool:
        """Whether any price is given at all (else every estimate would be zero)."""
        return bool(self.cost_per_second_by_resolution) or any(
            p is not None
            for p in (
                self.cost_per_second,
                self.cost_per_second_high_res,
                self.cost_per_second_with_audio,
            )
        )


class ModelInfo(BaseModel):
    """A model object as the provider returns it (schema ``Model`` of the OpenAPI).

    Only what seedq uses is typed: ``id``, ``request_schema`` (or ``json_request_schema``)
    and ``pricing``. Every other field (``capabilities``, ``developer``, ``deployments``,
    ``showcase``, ...) is kept as it came, in any shape, so a change there can never make
    the object unusable; :attr:`outputs` reads ``capabilities`` tolerantly.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str
    display_name: str | None = None
    pricing: Pricing = Field(default_factory=Pricing)
    request_schema: dict[str, Any] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("request_schema", "json_request_schema"),
    )

    @field_validator("display_name", mode="before")
    @classmethod
    def _display_name(cls, value: object) -> str | None:
        return value if isinstance(value, str) else None

    @field_validator("request_schema", mode="before")
    @classmethod
    def _schema(cls, value: object) -> object:
        return value if isinstance(value, dict) else {}

    @field_validator("pricing", mode="before")
    @classmethod
    def _pricing(cls, value: object) -> object:
        return value if isinstance(value, dict) else {}

    @property
    def outputs(self) -> frozenset[str]:
        """What the model makes (``capabilities.output``; the older list shape too)."""
        caps = (self.model_extra or {}).get("capabilities")
        if isinstance(caps, dict):
            caps = caps.get("output")
        if not isinstance(caps, list):
            return frozenset()
        return frozenset(str(c) for c in caps)

    @property
    def properties(self) -> dict[str, dict[str, Any]]:
        """Each parameter's spec; a spec that is not an object (a live schema gone wrong)
        is left out, so the parameter reads as unknown instead of crashing a check."""
        props = self.request_schema.get("properties", {})
        if not isinstance(props, dict):
            return {}
        return {str(name): spec for name, spec in props.items() if isinstance(spec, dict)}

    @property
    def required(self) -> list[str]:
        req = self.request_schema.get("required", [])
        return [str(r) for r in req] if isinstance(req, list) else []

    def default_of(self, name: str) -> Any:
        return self.properties.get(name, {}).get("default")

    def unusable_because(self) -> str | None:
        """Why seedq cannot validate or price against this object, naming the field; None
        when it can. The producer then falls back to the shipped copy, loudly."""
        if not self.request_schema:
            return "request_schema: missing or not an object"
        props = self.request_schema.get("properties")
        if not isinstance(props, dict) or not self.properties:
            return "request_schema.properties: missing or not an object of parameter specs"
        if not self.pricing.is_known:
            return "pricing: no per-second price (cost_per_second_by_resolution, cost_per_second)"
        return None


def shipped_model_ids() -> list[str]:
    folder = resources.files("seedq") / "models"
    return sorted(
        p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")
    )


def shipped_model_object(model_id: str) -> dict[str, Any]:
    """The offline copy of a model object shipped inside the package, as published JSON."""
    ref = resources.files("seedq") / "models" / f"{model_id}.json"
    if not ref.is_file():
        known = ", ".join(shipped_model_ids())
        raise UnknownModelError(f"unknown model {model_id!r} (known offline: {known})")
    data: dict[str, Any] = json.loads(ref.read_text(encoding="utf-8"))
    return data


def load_shipped_model(model_id: str) -> ModelInfo:
    """The offline copy of a model object shipped inside the package."""
    return ModelInfo.model_validate(shipped_model_object(model_id))


def billed_seconds(duration: int, auto_estimate_s: int) -> int:
    """Output seconds a job is expected to bill; ``-1`` counts as the configured estimate."""
    return auto_estimate_s if duration == AUTO_DURATION else duration


def rate_per_second(pricing: Pricing, *, resolution: str, generate_audio: bool) -> float:
    """The price of one output second for these options: the most specific price given.

    As published: ``cost_per_second_by_resolution[resolution]`` first; then the with-audio
    price when audio is asked for, or the high-res price for 1080p and 4k; then
    ``cost_per_second``. A price that is not given is skipped; none at all is zero (the
    plan says so, see :attr:`Pricing.is_known`).
    """
    by_resolution = pricing.cost_per_second_by_resolution or {}
    candidates = (
        by_resolution.get(resolution),
        pricing.cost_per_second_with_audio if generate_audio else None,
        pricing.cost_per_second_high_res if resolution in HIGH_RES else None,
        pricing.cost_per_second,
    )
    return next((c for c in candidates if c is not None), 0.0)


def price_source(pricing: Pricing, *, resolution: str, generate_audio: bool) -> str:
    """Which published price :func:`rate_per_second` used, by its field name."""
    if resolution in (pricing.cost_per_second_by_resolution or {}):
        return f"cost_per_second_by_resolution[{resolution}]"
    if generate_audio and pricing.cost_per_second_with_audio is not None:
        return "cost_per_second_with_audio"
    if resolution in HIGH_RES and pricing.cost_per_second_high_res is not None:
        return "cost_per_second_high_res"
    return "cost_per_second" if pricing.cost_per_second is not None else "none"


def estimate_cost(
    pricing: Pricing, *, seconds: int, resolution: str, generate_audio: bool
) -> float:
    return seconds * rate_per_second(pricing, resolution=resolution, generate_audio=generate_audio)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def check_param(name: str, value: Any, spec: dict[str, Any]) -> str | None:
    """Why ``value`` breaks the schema of parameter ``name``, or None when it is fine.

    A pure subset of JSON Schema (type, enum, minimum, maximum, minLength) plus the
    documented duration rule (-1 or 4 to 15) that the schema cannot say.
    """
    expected = spec.get("type")
    if isinstance(expected, str) and expected in _JSON_TYPES:
        ok = isinstance(value, _JSON_TYPES[expected])
        if expected in ("integer", "number") and isinstance(value, bool):
            ok = False
        if not ok:
            return f"must be {'an' if expected[0] in 'aeiou' else 'a'} {expected}"
    enum = spec.get("enum")
    if isinstance(enum, list) and value not in enum:
        return "must be one of " + ", ".join(str(e) for e in enum)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if name == "duration" and value != AUTO_DURATION and value < MIN_DURATION_S:
            return f"must be -1 (auto) or {MIN_DURATION_S} to {spec.get('maximum', 15)}"
        minimum, maximum = spec.get("minimum"), spec.get("maximum")
        if isinstance(minimum, int | float) and value < minimum:
            return f"must be at least {minimum}"
        if isinstance(maximum, int | float) and value > maximum:
            return f"must be at most {maximum}"
    if isinstance(value, str) and not value.strip() and spec.get("type") == "string":
        return "must not be empty"
    return None


def check_params(model: ModelInfo, params: dict[str, Any]) -> dict[str, str]:
    """Every schema problem of a parameter set, by field name."""
    problems: dict[str, str] = {}
    properties = model.properties  # built on each read: once per job, not per parameter
    for name in model.required:
        if params.get(name) in (None, ""):
            problems[name] = "is required"
    for name, value in params.items():
        if value is None or name in problems:
            continue
        spec = properties.get(name)
        if spec is None:
            problems[name] = "is not a parameter of model " + model.id
            continue
        reason = check_param(name, value, spec)
        if reason:
            problems[name] = reason
    return problems
