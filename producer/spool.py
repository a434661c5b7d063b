"""Validated jobs parked on disk between the validation pass and the submit pass, so a
manifest is parsed once and memory stays flat whatever its size."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from types import TracebackType
from typing import IO

from producer.jobs import JobSpec


class Spool:
    """A temporary JSON-lines file of :class:`JobSpec`; deleted when closed."""

    def __init__(self) -> None:
        self._file: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self.count = 0

    def write(self, job: JobSpec) -> None:
        self._file.write(json.dumps(job.fields(), separators=(",", ":")) + "\n")
        self.count += 1

    def __iter__(self) -> Iterator[JobSpec]:
        self._file.flush()
        self._file.seek(0)
        for line in self._file:
            yield JobSpec.from_record(json.loads(line))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
