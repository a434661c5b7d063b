"""With a key and a reachable provider, validation uses the provider's live schema."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seedq.cli import app
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
    assert "live schema unavailable" in result.output and "sk-live" not in result.output
