"""The README lists every setting, and names every command the CLI has."""

from __future__ import annotations

from pathlib import Path

from cli.main import app
from seedq.settings import Settings, env_name

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme_table() -> None:
    for name in Settings.model_fields:
        env = env_name(name)
        assert f"| `{env}` |" in README, f"{env} is missing from README's settings table"


def test_every_command_is_in_the_readme() -> None:
    for command in app.registered_commands:
        assert f"seedq {command.name}" in README, command.name
