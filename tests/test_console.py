"""The command line prints what manifests and the provider say as written: an output
key, a run name or a provider's reason is text, never rich markup (``cli.console``)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from rich.console import Console

import cli
from cli.progress import follow
from cli.run import out, summarize
from seedq.settings import Settings
from tests.test_report import RUN, report_world

# A closing tag with no opening one (a MarkupError), a terminal hyperlink, an emoji code.
HOSTILE = "clip[/x].mp4 [link=http://x]y[/link] [bold]b[/bold] :thumbs_up:"


def _consoles() -> list[tuple[str, Console]]:
    found = []
    for module in pkgutil.iter_modules(cli.__path__):
        loaded = importlib.import_module(f"cli.{module.name}")
        for name, value in vars(loaded).items():
            if isinstance(value, Console):
                found.append((f"cli.{module.name}.{name}", value))
    return found


def test_the_command_line_has_consoles() -> None:
    assert {"cli.run.out", "cli.run.err", "cli.produce.err"} <= {n for n, _ in _consoles()}


@pytest.mark.parametrize(("name", "console"), _consoles(), ids=lambda v: str(v))
def test_every_console_prints_text_as_written(name: str, console: Console) -> None:
    with console.capture() as captured:
        console.print(HOSTILE)
    assert captured.get() == HOSTILE + "\n", name


def test_run_summary_shows_keys_and_reasons_as_written(tmp_path: Path) -> None:
    """A delivered job's output key and a failed job's provider reason, in the table."""
    rw = report_world(tmp_path)
    reason = "blocked: [link=http://x]y[/link]"
    rw.store.update_job("clip-2", error=reason)
    spec = rw.store.job("clip-0")["spec"].replace("clips/clip-0.mp4", "clip[/x].mp4")
    rw.store.update_job("clip-0", spec=spec)
    settings = Settings(output=str(tmp_path / "out"))
    with out.capture() as captured:
        summarize(rw.store, rw.store.run(RUN) or rw.info, settings)
    text = captured.get()
    assert "clip[/x].mp4" in text and reason in text, text


def test_progress_shows_a_run_name_as_written(tmp_path: Path) -> None:
    rw = report_world(tmp_path)
    rw.store.create_run("r-named", "[/x] [link=http://x]y[/link]", {"priority": 0})
    with out.capture() as captured:
        follow(rw.store, "r-named", out, timeout_s=0)
    assert "[/x] [link=http://x]y[/link]" in captured.get()
