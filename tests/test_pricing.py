"""The published pricing rule: the most specific price given applies, and a price of an
unknown shape is "not given", never a reason to refuse the model object."""

from __future__ import annotations

from typing import Any

import pytest

from seedq.modelinfo import (
    ModelInfo,
    Pricing,
    load_shipped_model,
    price_source,
    rate_per_second,
    shipped_model_ids,
)

FULL: dict[str, Any] = {
    "cost_per_second_by_resolution": {"480p": 0.096, "720p": 0.2},
    "cost_per_second": 0.25,
    "cost_per_second_high_res": 0.5,
    "cost_per_second_with_audio": 0.3,
}


@pytest.mark.parametrize(
    ("prices", "resolution", "audio", "rate", "source"),
    [
        (FULL, "480p", False, 0.096, "cost_per_second_by_resolution[480p]"),
        (FULL, "720p", True, 0.2, "cost_per_second_by_resolution[720p]"),
        (FULL, "1080p", False, 0.5, "cost_per_second_high_res"),
        (FULL, "1080p", True, 0.3, "cost_per_second_with_audio"),
        (FULL, "4k", False, 0.5, "cost_per_second_high_res"),
        ({"cost_per_second": 0.25}, "1080p", True, 0.25, "cost_per_second"),
        (
            {"cost_per_second_by_resolution": None, "cost_per_second": 0.1},
            "720p",
            False,
            0.1,
            "cost_per_second",
        ),
        ({}, "720p", False, 0.0, "none"),
    ],
)
def test_most_specific_price_applies(
    prices: dict[str, Any], resolution: str, audio: bool, rate: float, source: str
) -> None:
    pricing = Pricing.model_validate(prices)
    assert rate_per_second(pricing, resolution=resolution, generate_audio=audio) == rate
    assert price_source(pricing, resolution=resolution, generate_audio=audio) == source


def test_prices_of_unknown_shape_read_as_not_given() -> None:
    pricing = Pricing.model_validate(
        {
            "method": 7,
            "cost_per_second": "0.2",
            "cost_per_second_by_resolution": {"480p": "cheap", "720p": 0.2},
            "cost_per_second_high_res": {"tier": 1},
            "cost_per_image_grid": {"high": {"4K": 1.47}},
        }
    )
    assert pricing.cost_per_second is None and pricing.cost_per_second_high_res is None
    assert pricing.cost_per_second_by_resolution == {"720p": 0.2}
    assert pricing.method is None and pricing.is_known


def test_live_model_object_of_the_openapi_shape_is_usable() -> None:
    body = {
        "id": "m",
        "object": "model",
        "created": 1775692800,
        "owned_by": "oxen",
        "developer": {"name": "ByteDance", "logo": None},
        "capabilities": {"input": ["text", "image"], "output": ["video"]},
        "deployments": [{"status": "active"}],
        "showcase": {"gallery": [{"src": "https://x/y.png", "alt": "y"}], "new": [1, 2]},
        "display_name": None,
        "pricing": {"method": "per_video_output_second", **FULL},
        "json_request_schema": {"properties": {"prompt": {"type": "string"}}},
    }
    model = ModelInfo.model_validate(body)
    assert model.outputs == {"video"} and model.unusable_because() is None
    assert model.model_extra is not None and model.model_extra["deployments"] == [
        {"status": "active"}
    ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"json_request_schema": None}, "request_schema"),
        ({"json_request_schema": {"properties": ["prompt"]}}, "request_schema.properties"),
        ({"pricing": {"method": "per_video_output_second"}}, "pricing"),
        ({"pricing": "n/a"}, "pricing"),
    ],
)
def test_an_unusable_model_object_names_the_field(change: dict[str, Any], field: str) -> None:
    body = {
        "id": "m",
        "pricing": FULL,
        "json_request_schema": {"properties": {"prompt": {"type": "string"}}},
        **change,
    }
    reason = ModelInfo.model_validate(body).unusable_because()
    assert reason is not None and reason.startswith(field + ":")


@pytest.mark.parametrize("model_id", shipped_model_ids())
def test_shipped_copies_carry_published_prices(model_id: str) -> None:
    model = load_shipped_model(model_id)
    assert model.unusable_because() is None
    assert model.pricing.cost_per_second_by_resolution
    resolutions = model.properties["resolution"]["enum"]
    assert set(resolutions) <= set(model.pricing.cost_per_second_by_resolution)
    assert model.outputs == {"video"}
