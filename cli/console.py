"""The command line's rich consoles, which print every string as written.

Output keys, prompts, job ids, run names, provider reasons, errors and paths come from
manifests and from the provider: as rich markup, ``clip[/x].mp4`` raises a MarkupError
and ``[link=...]`` becomes a terminal hyperlink. So markup, emoji codes and highlighting
are off on every console (table cells and titles follow the console); styling is asked
for with ``style=`` or a :class:`rich.text.Text`, never written inside the text.
"""

from __future__ import annotations

from rich.console import Console


def make_console(*, stderr: bool = False) -> Console:
    return Console(stderr=stderr, markup=False, emoji=False, highlight=False, soft_wrap=True)
