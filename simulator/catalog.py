"""The model objects the simulator serves, and what it charges for a generation.

The served object is the copy shipped with seedq (already in the published ``Model``
shape), with every price multiplied by ``price_factor``: a factor other than 1 makes the
simulated provider's live prices differ from seedq's shipped copy, so a test can tell
which of the two a client estimated with. Billing uses the served prices.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import ValidationError

from seedq.modelinfo import ModelInfo, rate_per_second, shipped_model_object

PRICE_FIELDS = ("cost_per_second", "cost_per_second_high_res", "cost_per_second_with_audio")


def served_object(
    model_id: str, price_factor: float, patch: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The model object as ``GET /api/ai/models/{id}`` answers it (UnknownModelError);
    ``patch`` (the ``model_patch`` knob) is merged in last, over the prices too."""
    body = copy.deepcopy(shipped_model_object(model_id))
    pricing = body.get("pricing")
    if isinstance(pricing, dict) and price_factor != 1.0:
        for name in PRICE_FIELDS:
            if isinstance(pricing.get(name), int | float):
                pricing[name] = round(pricing[name] * price_factor, 6)
        by_resolution = pricing.get("cost_per_second_by_resolution")
        if isinstance(by_resolution, dict):
            pricing["cost_per_second_by_resolution"] = {
                res: round(price * price_factor, 6) for res, price in by_resolution.items()
            }
    return {**body, **(patch or {})}


def served_model(
    model_id: str, price_factor: float, patch: dict[str, Any] | None = None
) -> ModelInfo:
    """The served object as the simulated service itself reads it (its checks, its
    charges). A ``patch`` that leaves it unusable (the shape tests of clients) is a
    change of the published document only: the service keeps its unpatched rules."""
    unpatched = ModelInfo.model_validate(served_object(model_id, price_factor))
    if not patch:
        return unpatched
    try:
        patched = ModelInfo.model_validate(served_object(model_id, price_factor, patch))
    except ValidationError:
        return unpatched
    return unpatched if patched.unusable_because() else patched


def charge(model: ModelInfo, params: dict[str, Any], seconds: int) -> float:
    """What a succeeded generation of ``seconds`` output costs: the most specific price
    given for its resolution and audio (the schema's defaults for what was not sent)."""
    resolution = params.get("resolution", model.default_of("resolution"))
    audio = params.get("generate_audio", model.default_of("generate_audio"))
    rate = rate_per_second(model.pricing, resolution=str(resolution), generate_audio=bool(audio))
    return round(rate * seconds, 6)
