"""The model object (parameter schema and pricing) and the pure rules built on it.

Shared by the producer (validation before anything is sent, cost estimates), the
provider client (parsing ``GET /api/ai/models/{id}``) and the simulator (validating a
generation's parameters when it runs, as the real service does).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from seedq.errors import SeedqError

HIGH_RES = frozenset({"1080p", "4k"})
AUTO_DURATION = -1
MIN_DURATION_S = 4


class UnknownModelError(SeedqError):
    """No schema is known for this model id."""


class Pricing(BaseModel):
    """Per-output-second prices of a video model (any of them may be unknown)."""

    model_config = ConfigDict(extra="allow")

    method: str = "per_video_output_second"
    currency: str = "USD"
    cost_per_second: float | None = None
    cost_per_second_high_res: float | None = None
    cost_per_second_with_audio: float | None = None


class ModelInfo(BaseModel):
    """A model object as the provider returns it; extra fields are kept, not refused."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str
    display_name: str | None = None
    description: str | None = None
    model_type: str | None = None
    endpoint: str | None = None
    capabilities: list[str] | None = None
    pricing: Pricing = Field(default_factory=Pricing)
    request_schema: dict[str, Any] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("request_schema", "json_request_schema"),
    )

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


def shipped_model_ids() -> list[str]:
    folder = resources.files("seedq") / "models"
    return sorted(
        p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")
    )


def load_shipped_model(model_id: str) -> ModelInfo:
    """The offline copy of a model object shipped inside the package."""
    ref = resources.files("seedq") / "models" / f"{model_id}.json"
    if not ref.is_file():
        known = ", ".join(shipped_model_ids())
        raise UnknownModelError(f"unknown model {model_id!r} (known offline: {known})")
    return ModelInfo.model_validate(json.loads(ref.read_text(encoding="utf-8")))


def billed_seconds(duration: int, auto_estimate_s: int) -> int:
    """Output seconds a job is expected to bill; ``-1`` counts as the configured estimate."""
    return auto_estimate_s if duration == AUTO_DURATION else duration


def rate_per_second(pricing: Pricing, *, resolution: str, generate_audio: bool) -> float:
    """The price of one output second for these options.

    The documentation lists three rates and not how they combine, so: the base rate is
    the high-res one for 1080p and 4k; audio adds its premium over the plain rate on top.
    An unknown rate counts as zero extra rather than guessing.
    """
    base = pricing.cost_per_second or 0.0
    rate = base
    if resolution in HIGH_RES and pricing.cost_per_second_high_res is not None:
        rate = pricing.cost_per_second_high_res
    if generate_audio and pricing.cost_per_second_with_audio is not None:
        rate += max(0.0, pricing.cost_per_second_with_audio - base)
    return rate


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
    for name in model.required:
        if params.get(name) in (None, ""):
            problems[name] = "is required"
    for name, value in params.items():
        if value is None or name in problems:
            continue
        spec = model.properties.get(name)
        if spec is None:
            problems[name] = "is not a parameter of model " + model.id
            continue
        reason = check_param(name, value, spec)
        if reason:
            problems[name] = reason
    return problems
