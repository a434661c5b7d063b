"""A manifest, read twice if need be: once to validate and plan, once to submit.

Both passes stream CSV rows, so memory stays flat whatever the row count; duplicates
of ids and output keys across the whole input, and output keys in each other's way, are
caught before anything is sent by :class:`DuplicateGuard`, which keeps what it has seen
on disk, not in memory.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producer.errors import Problem
from producer.jobs import JobContext, JobSpec, build_job
from producer.readers import Header, iter_csv, manifest_kind, precheck
from producer.yaml_reader import load_yaml
from seedq.modelinfo import ModelInfo, UnknownModelError
from seedq.refs import MAX_OUTPUT_KEY_BYTES, S3Grant, sidecar_key

ModelResolver = Callable[[str], ModelInfo]
YAML_LIMIT_NOTE = (
    " for a YAML manifest (SEEDQ_MAX_YAML_MANIFEST_BYTES), which is read whole; "
    "a CSV manifest is streamed and may be larger"
)


@dataclass(slots=True)
class ReadOptions:
    """What the command line adds to every manifest."""

    default_model: str
    sets: dict[str, Any] = field(default_factory=dict)
    model_override: str | None = None
    allow_private_urls: bool = False
    max_manifest_bytes: int = 256 * 1024 * 1024
    input_root: Path | None = None  # local images' folder; None: each manifest's own
    s3_allow: tuple[S3Grant, ...] = ()  # where s3:// inputs may come from; (): nowhere
    max_yaml_manifest_bytes: int = 16 * 1024 * 1024  # YAML is read whole, CSV streamed
    # Under the output's S3 prefix: seedq.refs.max_output_key_bytes(settings.output).
    max_output_key_bytes: int = MAX_OUTPUT_KEY_BYTES


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _open_rows(path: Path, opts: ReadOptions) -> tuple[Header | None, Iterator[Any]]:
    """The manifest's header and its rows; no header when the file is refused outright."""
    shown = str(path)
    kind = manifest_kind(path)
    if kind is None:
        refusal = Problem(shown, 0, "file", "unknown manifest type: name it .csv, .yaml or .yml")
        return None, iter([refusal])
    if kind == "yaml" and opts.max_yaml_manifest_bytes < opts.max_manifest_bytes:
        early = precheck(path, opts.max_yaml_manifest_bytes, limit_note=YAML_LIMIT_NOTE)
    else:
        early = precheck(path, opts.max_manifest_bytes)
    if early:
        return None, iter([early])
    if kind == "yaml":
        header, rows = load_yaml(path)
        if header.problems and not rows:
            return None, iter(header.problems)
        return header, iter(rows)
    header = Header(shown, "csv")
    return header, iter_csv(path, header)


def iter_manifest(
    path: Path, opts: ReadOptions, resolve_model: ModelResolver
) -> Iterator[JobSpec | Problem]:
    """Every job of one manifest, or the problems that stop it, in file order."""
    shown = str(path)
    header, source = _open_rows(path, opts)
    if header is None:
        yield from source
        return
    model_id = opts.model_override or header.model or opts.default_model
    try:
        model = resolve_model(model_id)
    except UnknownModelError as exc:
        yield Problem(shown, 1, "model", str(exc))
        return
    ctx = JobContext(
        header=header,
        model=model,
        base_dir=path.resolve().parent,
        sets=opts.sets,
        allow_private_urls=opts.allow_private_urls,
        input_root=opts.input_root,
        s3_allow=opts.s3_allow,
        max_output_key_bytes=opts.max_output_key_bytes,
    )
    pending = sorted(header.problems, key=lambda p: p.line)
    for item in source:
        if isinstance(item, Problem):
            yield item
            continue
        while pending and pending[0].line <= item.line:
            yield pending.pop(0)
        built = build_job(item, ctx)
        if isinstance(built, list):
            yield from (item.located(problem) for problem in built)
        elif not item.invalid:
            yield built
    yield from pending
    for column in header.columns:
        if column not in ctx.used_names:
            yield Problem(
                shown,
                1,
                column,
                "column is neither a job field nor used by a template; ignored",
                warning=True,
            )


Key = tuple[str, bytes]  # (kind, digest) of the guard's tables
SQL_VARIABLES = 900  # "?" marks in one statement: under SQLite's oldest limit (999)
GUARD_BATCH = 500  # jobs checked together (producer.plan.iter_jobs)


@dataclass(frozen=True, slots=True)
class _Names:
    """The digests a job's id and output take: as itself, and in the store (files, with
    what each is; the folders its output key needs)."""

    id: bytes
    output: bytes
    files: dict[bytes, tuple[str, str]]  # digest -> (name, "clip" or "sidecar")
    folders: dict[bytes, str]  # digest -> folder

    @classmethod
    def of(cls, job: JobSpec) -> _Names:
        key = job.output_key
        parts = key.split("/")
        return cls(
            _digest(job.id),
            _digest(key),
            {
                _digest(key): (key, "clip"),
                _digest(sidecar_key(key)): (sidecar_key(key), "sidecar"),
            },
            {_digest(f): f for f in ("/".join(parts[:end]) for end in range(1, len(parts)))},
        )


class DuplicateGuard:
    """Refuses a second job with the same id or the same output key, across manifests,
    and an output key that needs another one's file as a folder: ``x.mp4`` and
    ``x.mp4/y.mp4``, or ``a.mp4`` (sidecar ``a.json``) and ``a.json/b.mp4``. A directory
    store cannot hold both, and the second one's paid clip would have nowhere to go.

    What it has seen lives in a private on-disk SQLite database (stdlib; its page cache
    is bounded), so checking 100,000 rows does not hold 100,000 entries in memory. Jobs
    are checked a batch at a time (:meth:`check_many`): a few statements per batch, not
    per job.
    """

    def __init__(self) -> None:
        # "" is SQLite's private temporary on-disk database, deleted on close.
        self._db = sqlite3.connect("")
        self._db.execute(
            "CREATE TABLE seen (kind TEXT, digest BLOB, source TEXT, line INTEGER,"
            " PRIMARY KEY (kind, digest)) WITHOUT ROWID"
        )
        # Every name the outputs take in the store: "file" (a clip or a sidecar, ``what``
        # says which) or "dir" (a folder some output key needs).
        self._db.execute(
            "CREATE TABLE names (kind TEXT, digest BLOB, what TEXT, source TEXT,"
            " line INTEGER, PRIMARY KEY (kind, digest)) WITHOUT ROWID"
        )

    def check(self, job: JobSpec) -> list[Problem]:
        return self.check_many([job])[0]

    def check_many(self, jobs: list[JobSpec]) -> list[list[Problem]]:
        """Each job's problems, the same as checking them one after the other: what the
        earlier batches took is read in two statements, the batch's own jobs are checked
        against each other in memory, and what they take is written in two more."""
        batch = [_Names.of(job) for job in jobs]
        seen = self._taken(
            "seen", "source, line", batch, lambda n: [("id", n.id), ("output", n.output)]
        )
        names = self._taken(
            "names",
            "what, source, line",
            batch,
            lambda n: [*(("dir", d) for d in n.files), *(("file", d) for d in n.folders)],
        )
        out: list[list[Problem]] = []
        for job, mine in zip(jobs, batch, strict=True):
            problems = self._duplicates(job, mine, seen)
            out.append(problems + self._in_the_way(job, mine, names))
        self._db.executemany(
            "INSERT OR IGNORE INTO seen VALUES (?, ?, ?, ?)",
            # In key order: each B-tree page is then visited once per batch.
            sorted((*key, *where) for key, where in seen.items()),
        )
        self._db.executemany(
            "INSERT OR IGNORE INTO names VALUES (?, ?, ?, ?, ?)",
            sorted((*key, *row) for key, row in names.items()),
        )
        return out

    def _taken(
        self,
        table: str,
        columns: str,
        batch: list[_Names],
        wanted: Callable[[_Names], list[Key]],
    ) -> dict[Key, tuple[Any, ...]]:
        """The rows of ``table`` an earlier batch left under the keys this batch asks
        about; the batch's own rows are added to the same dict as it is checked."""
        by_kind: dict[str, set[bytes]] = {}
        for names in batch:
            for kind, digest in wanted(names):
                by_kind.setdefault(kind, set()).add(digest)
        found: dict[Key, tuple[Any, ...]] = {}
        for kind, digests in by_kind.items():
            ordered = sorted(digests)
            for start in range(0, len(ordered), SQL_VARIABLES):
                chunk = ordered[start : start + SQL_VARIABLES]
                # Only the table's name, its columns (constants of this module) and "?"
                # marks are formatted in, never a value (bandit B608, ruff S608).
                marks = ", ".join("?" * len(chunk))
                query = (
                    f"SELECT digest, {columns} FROM {table} WHERE kind = ? AND digest IN ({marks})"  # noqa: S608  # nosec B608
                )
                for digest, *rest in self._db.execute(query, [kind, *chunk]):
                    found[(kind, digest)] = tuple(rest)
        return found

    @staticmethod
    def _duplicates(job: JobSpec, mine: _Names, seen: dict[Key, tuple[Any, ...]]) -> list[Problem]:
        here = (job.source, job.line)
        problems = []
        for name, value, digest in (
            ("id", job.id, mine.id),
            ("output", job.output_key, mine.output),
        ):
            first = seen.setdefault((name, digest), here)
            if tuple(first) == here:
                continue
            what = "id" if name == "id" else "output key"
            problems.append(
                Problem(
                    job.source,
                    job.line,
                    name,
                    f"duplicate {what} {value!r} (first at {first[0]}:{first[1]})",
                )
            )
        return problems

    @staticmethod
    def _in_the_way(job: JobSpec, mine: _Names, names: dict[Key, tuple[Any, ...]]) -> list[Problem]:
        """Where ``job``'s output and an earlier one's cannot both be stored: a file of
        this job where another's folder is, or a folder where another's file is; then
        ``job``'s names are recorded (the first to take a name keeps it)."""
        key = job.output_key
        here = (job.source, job.line)
        clashes = []
        for digest in sorted(mine.files):
            found = names.get(("dir", digest))
            if found is not None and tuple(found[1:]) != here:
                name, what = mine.files[digest]
                clashes.append(
                    f"puts its {what} at {name!r}, a folder of the output at {found[1]}:{found[2]}"
                )
        for digest in sorted(mine.folders):
            found = names.get(("file", digest))
            if found is not None and tuple(found[1:]) != here:
                clashes.append(
                    f"needs {mine.folders[digest]!r} as a folder, but it is the {found[0]} "
                    f"of the output at {found[1]}:{found[2]}"
                )
        for digest, (_name, what) in mine.files.items():
            names.setdefault(("file", digest), (what, *here))
        for digest in mine.folders:
            names.setdefault(("dir", digest), ("folder", *here))
        return [
            Problem(job.source, job.line, "output", f"output key {key!r} {clash}")
            for clash in clashes
        ]

    def close(self) -> None:
        self._db.close()
