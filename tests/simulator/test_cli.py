"""``seedq simulator``'s flags reach the configuration; a bad one is one line, exit 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import simulator.server
from cli.main import app
from simulator.config import SimConfig

runner = CliRunner()


def test_the_new_flags_reach_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[SimConfig] = []
    monkeypatch.setattr(simulator.server, "serve_forever", lambda c, h, p: served.append(c))
    flags = [
        "--history=1000",
        "--price-factor=1.5",
        "--stuck-rate=0.25",
        "--stuck-retry-rate=0.5",
        '--model-patch={"pricing": null}',
    ]
    result = runner.invoke(app, ["simulator", *flags])
    assert result.exit_code == 0, result.output
    (config,) = served
    assert (config.history, config.price_factor) == (1000, 1.5)
    assert (config.stuck_rate, config.stuck_retry_rate) == (0.25, 0.5)
    assert config.model_patch == {"pricing": None}


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ("--stuck-rate=2", "stuck_rate"),
        ("--stuck-retry-rate=-1", "stuck_retry_rate"),
        ("--history=-5", "history"),
        ("--price-factor=0", "price_factor"),
        ("--model-patch=[1]", "model patch must be a JSON object"),
        ("--model-patch={oops", "model patch must be a JSON object"),
    ],
)
def test_a_bad_value_is_one_line(flag: str, says: str) -> None:
    result = runner.invoke(app, ["simulator", flag])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seedq simulator: ") and says in lines[0]
