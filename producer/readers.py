"""Reading CSV and YAML manifests into raw rows, with the line each row starts on.

Readers never raise on bad input: every problem comes back as a :class:`Problem`, so
the validator can list them all at once. CSV is streamed row by row (a 100,000-row file
is never held whole); YAML is composed into a node tree (alias expansion budgeted, so
an alias bomb is refused quickly) and walked.
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

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
# Nodes built, alias expansions counted each time: a plain document has fewer nodes than
# half its bytes, so this allows generous anchors and merges but stops an alias bomb
# within a fraction of a second.
YAML_NODE_ALLOWANCE = 100_000
CSV_FIELD_LIMIT = 1024 * 1024
SAFE_TAGS = frozenset(
    "tag:yaml.org,2002:" + name
    for name in ("str", "int", "float", "bool", "null", "seq", "map", "merge", "timestamp")
)

ManifestKind = Literal["csv", "yaml"]
TOO_DEEP = "nested too deeply (lists or maps inside each other thousands of levels down)"


@dataclass(slots=True)
class RawJob:
    """One job as written: job fields and variables, both still unvalidated."""

    line: int
    fields: dict[str, Any]
    variables: dict[str, str] = field(default_factory=dict)
    invalid: bool = False  # a problem was already reported for it while reading


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


def precheck(path: Path, max_bytes: int) -> Problem | None:
    """Size, existence and binary content: the refusals that need no parsing."""
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
        return Problem(shown, 0, "file", f"is {size} bytes, above the limit of {max_bytes}")
    if size == 0 or not head.strip(b"\xef\xbb\xbf \t\r\n"):
        return Problem(shown, 0, "file", "is empty")
    if b"\x00" in head:
        return Problem(shown, 0, "file", "is binary, not a CSV or YAML manifest")
    return None


def _decode_problem(path: str, data: bytes, exc: UnicodeDecodeError) -> Problem:
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


# ---------------------------------------------------------------- YAML


class _Budget:
    def __init__(self, limit: int) -> None:
        self.left = limit

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise _TooBig


class _TooBig(Exception):
    pass


class _BadTag(Exception):
    def __init__(self, node: Node) -> None:
        super().__init__(node.tag)
        self.line = node.start_mark.line + 1


def _to_python(node: Node, budget: _Budget, ctor: SafeConstructor) -> Any:
    """Convert a composed node to plain data; aliases cost every time they are expanded."""
    budget.spend()
    if node.tag not in SAFE_TAGS:
        raise _BadTag(node)
    if isinstance(node, ScalarNode):
        return ctor.construct_object(node, deep=True)
    if isinstance(node, SequenceNode):
        return [_to_python(child, budget, ctor) for child in node.value]
    if isinstance(node, MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merged = _to_python(value_node, budget, ctor)
                for part in merged if isinstance(merged, list) else [merged]:
                    if isinstance(part, dict):
                        for k, v in part.items():
                            result.setdefault(k, v)
                continue
            key = _to_python(key_node, budget, ctor)
            result[key if isinstance(key, str) else str(key)] = _to_python(value_node, budget, ctor)
        return result
    raise yaml.YAMLError(f"unsupported YAML node {node.tag}")


def load_yaml(path: Path) -> tuple[Header, list[RawJob]]:
    """Parse a YAML manifest; problems go to ``header.problems``."""
    shown = str(path)
    header = Header(shown, "yaml")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        header.problems.append(_decode_problem(shown, data, exc))
        return header, []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        header.problems.append(Problem(shown, line, "yaml", f"{exc.problem or exc.context}"))
        return header, []
    except yaml.YAMLError as exc:
        header.problems.append(Problem(shown, 0, "yaml", str(exc)))
        return header, []
    except RecursionError:  # PyYAML composes recursively: [[[[... a few thousand deep
        header.problems.append(Problem(shown, 1, "yaml", TOO_DEEP))
        return header, []
    if not isinstance(root, MappingNode):
        header.problems.append(
            Problem(
                shown, 1, "file", "must be a mapping with a 'jobs:' list (see manifests/README.md)"
            )
        )
        return header, []
    ctor = SafeConstructor()
    limit = YAML_NODE_ALLOWANCE + 2 * len(text)
    budget = _Budget(limit)
    try:
        return header, _read_top(root, header, budget, ctor)
    except _TooBig:
        header.problems.append(
            Problem(shown, 1, "yaml", f"expands to more than {limit} values (an alias bomb?)")
        )
    except _BadTag as exc:
        header.problems.append(Problem(shown, exc.line, "yaml", f"tag {exc} is not allowed"))
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        header.problems.append(Problem(shown, 1, "yaml", f"unreadable value: {exc}"))
    except RecursionError:
        header.problems.append(Problem(shown, 1, "yaml", TOO_DEEP))
    return header, []


def _read_top(
    root: MappingNode, header: Header, budget: _Budget, ctor: SafeConstructor
) -> list[RawJob]:
    shown = header.path
    jobs: list[RawJob] = []
    jobs_seen = False
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        key = str(_to_python(key_node, budget, ctor))
        if key not in YAML_TOP_KEYS:
            header.problems.append(
                Problem(
                    shown, line, key, "unknown top-level key" + did_you_mean(key, YAML_TOP_KEYS)
                )
            )
            continue
        value = _to_python(value_node, budget, ctor)
        if key in ("model", "name", "output"):
            if value is not None and not isinstance(value, str):
                header.problems.append(Problem(shown, line, key, "must be text"))
            else:
                setattr(header, key, value)
        elif key in ("defaults", "vars"):
            _read_mapping(header, key, line, value)
        else:
            jobs_seen = True
            jobs = _read_jobs(header, value_node, budget, ctor)
    if not jobs_seen:
        header.problems.append(
            Problem(shown, 1, "jobs", "missing: a manifest needs a 'jobs:' list")
        )
    return jobs


def _read_mapping(header: Header, key: str, line: int, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        header.problems.append(Problem(header.path, line, key, "must be a mapping"))
        return
    if key == "vars":
        header.variables = {str(k): "" if v is None else str(v) for k, v in value.items()}
        return
    for name in value:
        if name not in JOB_FIELDS or name == "id":
            hint = did_you_mean(name, JOB_FIELDS) if name != "id" else " (ids cannot be shared)"
            header.problems.append(
                Problem(header.path, line, f"defaults.{name}", "unknown field" + hint)
            )
    header.defaults = {k: v for k, v in value.items() if k in JOB_FIELDS and k != "id"}


def _read_jobs(header: Header, node: Node, budget: _Budget, ctor: SafeConstructor) -> list[RawJob]:
    shown = header.path
    if node.tag not in SAFE_TAGS:
        raise _BadTag(node)
    if not isinstance(node, SequenceNode):
        header.problems.append(Problem(shown, node.start_mark.line + 1, "jobs", "must be a list"))
        return []
    jobs: list[RawJob] = []
    for item in node.value:
        line = item.start_mark.line + 1
        value = _to_python(item, budget, ctor)
        if not isinstance(value, dict):
            header.problems.append(Problem(shown, line, "job", "must be a mapping of fields"))
            continue
        job = RawJob(line, {})
        known = len(header.problems)
        for name, field_value in value.items():
            if name == "vars":
                if isinstance(field_value, dict):
                    job.variables = {
                        str(k): "" if v is None else str(v) for k, v in field_value.items()
                    }
                else:
                    header.problems.append(Problem(shown, line, "vars", "must be a mapping"))
            elif name in JOB_FIELDS:
                job.fields[name] = field_value
            else:
                header.problems.append(
                    Problem(shown, line, name, "unknown field" + did_you_mean(name, YAML_JOB_KEYS))
                )
        job.invalid = len(header.problems) > known
        jobs.append(job)
    if not jobs and not header.problems:
        header.problems.append(
            Problem(shown, node.start_mark.line + 1, "jobs", "the list is empty")
        )
    return jobs
