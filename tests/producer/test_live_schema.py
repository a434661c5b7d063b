"""With a key and a reachable provider, validation uses the provider's live schema."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from seedq.catalog import ModelCatalog, Origin
from seedq.modelinfo import ModelInfo
from simulator.config import SimConfig
from simulator.server import running_simulator

runner = CliRunner()


@pytest.mark.parametrize("field", ["request_schema", "json_request_schema"])
def test_validate_refreshes_schema_from_provider(
    write: Callable[[str, str | bytes], Path], monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    path = write("m.csv", "prompt,input_image,resolution\np,images/a.png,720p\n")
    with running_simulator(SimConfig(schema_field=field)) as sim:
        monkeypatch.setenv("SEEDQ_PROVIDER_URL", sim.url)
        monkeypatch.setenv("OXEN_API_KEY", "sk-live-schema-test")
        result = runner.invoke(app, ["validate", str(path)])
        offline = runner.invoke(app, ["validate", "--offline", str(path)])
    assert result.exit_code == 0, result.output
    assert "schema and pricing from the provider" in result.output
    assert "copy shipped with seedq" in offline.output


def test_unreachable_provider_falls_back_to_shipped_schema(
    write: Callable[[str, str | bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write("m.csv", "prompt,input_image\np,images/a.png\n")
    monkeypatch.setenv("SEEDQ_PROVIDER_URL", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("OXEN_API_KEY", "sk-live-schema-test")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "WARNING: the provider's model object for" in result.output
    assert "cannot be used (" in result.output and "sk-live" not in result.output
    assert "cost_per_second_by_resolution[720p]" in result.output  # the prices used
    assert "the copy shipped with seedq" in result.output  # and where they came from


def _live(body: dict[str, Any]) -> Callable[[str], ModelInfo]:
    return lambda model_id: ModelInfo.model_validate({"id": model_id, **body})


MODEL = "bytedance-seedance-2-0-image-to-video"
SCHEMA = {"properties": {"prompt": {"type": "string"}, "input_image": {"type": "string"}}}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"request_schema": SCHEMA}, "pricing:"),
        ({"pricing": {"cost_per_second": 0.3}, "request_schema": None}, "request_schema:"),
        (
            {"pricing": {"cost_per_second": 0.3}, "request_schema": {"properties": 3}},
            "request_schema.properties:",
        ),
    ],
)
def test_an_unusable_live_object_falls_back_loudly_naming_the_field(
    body: dict[str, Any], named: str
) -> None:
    catalog = ModelCatalog(live=_live(body))
    info = catalog(MODEL)
    assert info.pricing.cost_per_second_by_resolution  # the shipped copy, whole
    assert catalog.sources[MODEL].origin is Origin.SHIPPED
    (warning,) = catalog.warnings
    assert named in warning and MODEL in warning


def test_a_usable_live_object_is_used_whole() -> None:
    body = {"pricing": {"cost_per_second_by_resolution": {"720p": 0.5}}, "request_schema": SCHEMA}
    catalog = ModelCatalog(live=_live(body))
    assert catalog(MODEL).pricing.cost_per_second_by_resolution == {"720p": 0.5}
    assert catalog.sources[MODEL].origin is Origin.PROVIDER and not catalog.warnings
    assert catalog.notes == [f"{MODEL}: schema and pricing from the provider"]


@pytest.mark.parametrize(
    "patch",
    [
        {"capabilities": "video", "deployments": {"new": 1}, "showcase": 3, "developer": None},
        {"created": "yesterday", "owned_by": None, "object": "model-v2", "brand_new": [1, {}]},
        {"display_name": 42, "released_at": {"at": 1}, "fine_tuning": "no"},
    ],
)
def test_new_shapes_in_unused_fields_keep_the_live_object(
    write: Callable[[str, str | bytes], Path],
    monkeypatch: pytest.MonkeyPatch,
    patch: dict[str, Any],
) -> None:
    """Over HTTP: the simulator's model object changed where seedq reads nothing."""
    path = write("m.csv", "prompt,input_image,resolution,duration\np,images/a.png,720p,5\n")
    with running_simulator(SimConfig(model_patch=patch, price_factor=2.0)) as sim:
        monkeypatch.setenv("SEEDQ_PROVIDER_URL", sim.url)
        monkeypatch.setenv("OXEN_API_KEY", "sk-live-schema-test")
        result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "WARNING" not in result.output
    assert "schema and pricing from the provider" in result.output
    assert "0.4 USD/s (cost_per_second_by_resolution[720p], from the provider)" in result.output
    assert "2.00" in result.output  # 5 s at the live 0.40/s, not the shipped 0.20/s


@pytest.mark.parametrize(
    ("patch", "named"),
    [
        ({"pricing": {"method": "per_video_output_second"}}, "pricing:"),
        ({"pricing": None}, "pricing:"),
        ({"request_schema": None}, "request_schema:"),
        ({"request_schema": {"properties": "all of them"}}, "request_schema.properties:"),
        ({"id": None}, "response did not match the contract"),
    ],
)
def test_an_unusable_live_object_is_said_loudly_over_http(
    write: Callable[[str, str | bytes], Path],
    monkeypatch: pytest.MonkeyPatch,
    patch: dict[str, Any],
    named: str,
) -> None:
    path = write("m.csv", "prompt,input_image,resolution,duration\np,images/a.png,720p,5\n")
    with running_simulator(SimConfig(model_patch=patch, price_factor=2.0)) as sim:
        monkeypatch.setenv("SEEDQ_PROVIDER_URL", sim.url)
        monkeypatch.setenv("OXEN_API_KEY", "sk-live-schema-test")
        result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    warning = f"WARNING: the provider's model object for {MODEL} cannot be used ({named}"
    assert warning in result.output
    assert "from the copy shipped with seedq" in result.output
    assert "1.00" in result.output  # 5 s at the shipped 0.20/s
    assert "sk-live" not in result.output


def test_a_class_without_a_published_price_is_said_and_refuses_a_budget(
    write: Callable[[str, str | bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live object prices 480p only: a 720p job would be estimated at zero."""
    path = write("m.csv", "prompt,input_image,resolution,duration\np,images/a.png,720p,5\n")
    only_480p = {"method": "per_video_output_second", "cost_per_second_by_resolution": {"480p": 1}}
    with running_simulator(SimConfig(model_patch={"pricing": only_480p})) as sim:
        monkeypatch.setenv("SEEDQ_PROVIDER_URL", sim.url)
        monkeypatch.setenv("OXEN_API_KEY", "sk-live-schema-test")
        checked = runner.invoke(app, ["validate", str(path)])
        budgeted = runner.invoke(app, ["submit", "--dry-run", "--budget", "5", str(path)])
    assert checked.exit_code == 0, checked.output
    assert f"WARNING: no published price for {MODEL} 720p: estimated at 0" in checked.output
    assert budgeted.exit_code == 2, budgeted.output
    assert "--budget cannot be held" in budgeted.output and "Traceback" not in budgeted.output
