"""Errors of the producer, all under :class:`ProducerError`.

    ProducerError
    ├── ManifestError        the manifest is invalid: carries every problem, by line
    └── SubmitError          valid manifest, but it cannot be submitted (no broker, a conflict)

Nothing here is transient: a bad manifest stays bad until a person edits it, so the
CLI prints the problems and exits 2 without sending anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from seedq.errors import SeedqError


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or suspicious, when ``warning``) at one place of a manifest."""

    path: str
    line: int
    field: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        kind = "warning: " if self.warning else ""
        return f"{self.path}:{self.line}: {self.field}: {kind}{self.message}"


class ProducerError(SeedqError):
    """Base of every producer error."""


class ManifestError(ProducerError):
    """The manifest cannot be used; ``problems`` lists every reason, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        errors = sum(1 for p in problems if not p.warning)
        super().__init__(f"{errors} problem(s) in the manifest")


class SubmitError(ProducerError):
    """A valid manifest that cannot be submitted as asked."""
