"""``seedq simulator``: placeholder until the simulator lands (issue 3)."""

from __future__ import annotations

import typer


def simulator_command(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8100, help="Port to listen on."),
) -> None:
    """Run the provider simulator (a real HTTP server following the provider's contract)."""
    raise typer.Exit(code=1)
