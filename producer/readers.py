"""Reading manifests into raw rows, with the line each row starts on: what every
reader shares, and the CSV reader (the YAML one is ``producer.yaml_reader``).

Readers never raise on bad input: every problem comes back as a :class:`Problem`, so
the validator can list them all at once. CSV is streamed row by row (a 100,000-row file
is never held whole).
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Literal

from producer.errors import Problem

PROVIDER_FIELDS = (
    "prompt",
    "input_image",
    "input_image_has_face",
    "tail_image_url",
    "tail_image_url_has_face",
    "resolution",
    "duration",
    "aspect_ratio",
    "generate_audio",
    "watermark",
)
JOB_FIELDS = (*PROVIDER_FIELDS, "id", "output", "priority", "overwrite")
YAML_JOB_KEYS = (*JOB_FIELDS, "vars")
YAML_TOP_KEYS = ("model", "name", "defaults", "output", "jobs", "vars")
SNIFF_BYTES = 8192
CSV_FIELD_LIMIT = 1024 * 1024

ManifestKind = Literal["csv", "yaml"]


@dataclass(slots=True)
class RawJob:
    """One job as written: job fields and variables, both still unvalidated."""

    line: int
    fields: dict[str, Any]
    variables: dict[str, str] = field(default_factory=dict)
    invalid: bool = False  # a problem was already reported for it while reading
    lines: dict[str, int] = field(default_factory=dict)  # each field's own line, if known

    def located(self, problem: Problem) -> Problem:
        """The problem at the line of the field it names, where the reader knows it."""
        line = self.lines.get(problem.field.partition(".")[0], problem.line)
        return problem if line == problem.line else replace(problem, line=line)


@dataclass(slots=True)
class Header:
    """What a manifest says about all its jobs."""

    path: str
    kind: ManifestKind
    model: str | None = None
    name: str | None = None
    output: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)  # CSV variable columns
    problems: list[Problem] = field(default_factory=list)


def did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word.lower(), choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def manifest_kind(path: Path) -> ManifestKind | None:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    return None


def precheck(path: Path, max_bytes: int, *, limit_note: str = "") -> Problem | None:
    """Size, existence and binary content: the refusals that need no parsing;
    ``limit_note`` says which limit ``max_bytes`` is."""
    shown = str(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except FileNotFoundError:
        return Problem(shown, 0, "file", "no such file")
    except IsADirectoryError:
        return Problem(shown, 0, "file", "is a directory, not a manifest")
    except OSError as exc:
        return Problem(shown, 0, "file", f"cannot be read: {exc.strerror or exc}")
    if size > max_bytes:
        return Problem(
            shown, 0, "file", f"is {size} bytes, above the limit of {max_bytes}{limit_note}"
        )
    if size == 0 or not head.strip(b"\xef\xbb\xbf \t\r\n"):
        return Problem(shown, 0, "file", "is empty")
    if b"\x00" in head:
        return Problem(shown, 0, "file", "is binary, not a CSV or YAML manifest")
    return None


def decode_problem(path: str, data: bytes, exc: UnicodeDecodeError) -> Problem:
    line = data.count(b"\n", 0, exc.start) + 1
    bad = data[exc.start : exc.start + 1].hex()
    return Problem(path, line, "encoding", f"not UTF-8 (byte 0x{bad}); save the file as UTF-8")


# ---------------------------------------------------------------- CSV


def iter_csv(path: Path, header: Header) -> Iterator[RawJob | Problem]:
    """Rows of a CSV manifest; fills ``header.columns`` from the header row first."""
    shown = str(path)
    csv.field_size_limit(CSV_FIELD_LIMIT)
    with path.open("rb") as fh:
        reader = csv.reader(_decoded_lines(fh), strict=True)
        names: list[str] | None = None
        next_line = 1
        try:
            for cells in reader:
                line, next_line = next_line, reader.line_num + 1
                if not any(c.strip() for c in cells):
                    continue
                if names is None:
                    names, problems = _csv_names(shown, line, cells)
                    header.columns = [n for n in names if n.lower() not in JOB_FIELDS]
                    yield from problems
                    if problems:
                        return
                    continue
                yield _csv_row(shown, line, names, cells)
        except _LineDecodeError as exc:
            yield Problem(shown, exc.line, "encoding", f"{exc}; save the file as UTF-8")
            return
        except csv.Error as exc:
            yield Problem(
                shown, next_line, "csv", f"{exc} (an unclosed quote, or a truncated file?)"
            )
            return
        if names is None:
            yield Problem(shown, 1, "file", "has no header row")


class _LineDecodeError(ValueError):
    def __init__(self, line: int, byte: bytes) -> None:
        super().__init__(f"not UTF-8 (byte 0x{byte.hex()})")
        self.line = line


def _decoded_lines(fh: BinaryIO) -> Iterator[str]:
    """Decode line by line, so a bad byte is reported on its own line number."""
    for number, raw in enumerate(fh, start=1):
        chunk = raw[3:] if number == 1 and raw.startswith(b"\xef\xbb\xbf") else raw
        try:
            yield chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _LineDecodeError(number, chunk[exc.start : exc.start + 1]) from None


def _csv_names(path: str, line: int, cells: list[str]) -> tuple[list[str], list[Problem]]:
    names = [c.strip() for c in cells]
    problems: list[Problem] = []
    seen: set[str] = set()
    for name in names:
        key = name.lower() if name.lower() in JOB_FIELDS else name
        if not name:
            problems.append(Problem(path, line, "header", "a column has no name"))
        elif key in seen:
            problems.append(Problem(path, line, "header", f"column {name!r} appears twice"))
        seen.add(key)
    if "prompt" not in seen and "input_image" not in seen:
        problems.append(
            Problem(
                path,
                line,
                "header",
                f"needs columns prompt and input_image (found: {', '.join(names)})",
            )
        )
    return names, problems


def _csv_row(path: str, line: int, names: list[str], cells: list[str]) -> RawJob | Problem:
    if len(cells) > len(names) and any(c.strip() for c in cells[len(names) :]):
        return Problem(path, line, "row", f"has {len(cells)} cells but the header has {len(names)}")
    job = RawJob(line, {})
    for name, cell in zip(names, cells, strict=False):
        if name.lower() in JOB_FIELDS:
            if cell.strip():
                job.fields[name.lower()] = cell
        else:
            job.variables[name] = cell.strip()
    for name in names[len(cells) :]:
        if name.lower() not in JOB_FIELDS:
            job.variables[name] = ""
    return job
