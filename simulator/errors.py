"""The simulator's exceptions, all under :class:`seedq.errors.SeedqError`.

    SeedqError
    └── SimulatorError         anything the simulator raises on purpose
        ├── SimConfigError     a knob value that cannot work (bad CLI flag, bad /_sim/config)
        └── GenerationFailed   a generation ends ``failed``; ``str(exc)`` is its error_message

``GenerationFailed`` never leaves the simulator: the runner turns it into the
generation's ``error_message``, as the real service reports run-time problems.
"""

from __future__ import annotations

from seedq.errors import SeedqError


class SimulatorError(SeedqError):
    """Base of every error the simulator raises on purpose."""


class SimConfigError(SimulatorError):
    """A simulator setting is invalid."""


class GenerationFailed(SimulatorError):
    """A generation cannot succeed; the message becomes its error_message."""


class ApiError(SimulatorError):
    """An error answer of the simulated API, in the documented typed shape."""

    def __init__(self, status: int, error_type: str, title: str, detail: str) -> None:
        super().__init__(f"{status} {error_type}: {detail}")
        self.status, self.error_type, self.title, self.detail = status, error_type, title, detail
