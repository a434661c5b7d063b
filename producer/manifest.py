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


class DuplicateGuard:
    """Refuses a second job with the same id or the same output key, across manifests,
    and an output key that needs another one's file as a folder: ``x.mp4`` and
    ``x.mp4/y.mp4``, or ``a.mp4`` (sidecar ``a.json``) and ``a.json/b.mp4``. A directory
    store cannot hold both, and the second one's paid clip would have nowhere to go.

    What it has seen lives in a private on-disk SQLite database (stdlib; its page cache
    is bounded), so checking 100,000 rows does not hold 100,000 entries in memory.
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
        problems = []
        for value, name in ((job.id, "id"), (job.output_key, "output")):
            digest = _digest(value)
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO seen VALUES (?, ?, ?, ?)",
                (name, digest, job.source, job.line),
            ).rowcount
            if inserted:
                continue
            first = self._db.execute(
                "SELECT source, line FROM seen WHERE kind = ? AND digest = ?", (name, digest)
            ).fetchone()
            if tuple(first) == (job.source, job.line):
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
        return problems + self._in_the_way(job)

    def _in_the_way(self, job: JobSpec) -> list[Problem]:
        """Where ``job``'s output and an earlier one's cannot both be stored; then
        ``job``'s names are recorded. One query and one insert per job."""
        key = job.output_key
        files = {
            _digest(key): (key, "clip"),
            _digest(sidecar_key(key)): (sidecar_key(key), "sidecar"),
        }
        parts = key.split("/")
        folders = {_digest(f): f for f in ("/".join(parts[:end]) for end in range(1, len(parts)))}
        # A file of this job where another's folder is, or a folder where another's file
        # is: one query, each side an IN list on the primary key.
        query = (
            "SELECT kind, digest, what, source, line FROM names"
            " WHERE kind = 'dir' AND digest IN (?, ?)"
        )
        if folders:
            marks = ", ".join("?" * len(folders))
            # Only "?" marks are formatted in, never a value (bandit B608, ruff S608).
            query += (
                " UNION ALL SELECT kind, digest, what, source, line FROM names"  # noqa: S608
                f" WHERE kind = 'file' AND digest IN ({marks})"  # nosec B608
            )
        found = self._db.execute(query, [*files, *folders]).fetchall()
        clashes = []
        for kind, digest, what, source, line in found:
            if (source, line) == (job.source, job.line):
                continue
            where = f"the output at {source}:{line}"
            if kind == "file":
                clashes.append(
                    f"needs {folders[digest]!r} as a folder, but it is the {what} of {where}"
                )
            else:
                name, mine = files[digest]
                clashes.append(f"puts its {mine} at {name!r}, a folder of {where}")
        rows = [("file", d, what, job.source, job.line) for d, (_, what) in files.items()]
        rows += [("dir", d, "folder", job.source, job.line) for d in folders]
        self._db.executemany("INSERT OR IGNORE INTO names VALUES (?, ?, ?, ?, ?)", rows)
        return [
            Problem(job.source, job.line, "output", f"output key {key!r} {clash}")
            for clash in clashes
        ]

    def close(self) -> None:
        self._db.close()
