"""From a raw row to a validated :class:`JobSpec`: defaults, templates, types, schema,
safety and identity. Pure apart from looking at local image files."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from producer.errors import Problem
from producer.readers import PROVIDER_FIELDS, Header, RawJob
from producer.values import to_bool, to_duration, to_int, to_text
from seedq.modelinfo import ModelInfo, check_params
from seedq.refs import (
    MAX_OUTPUT_KEY_BYTES,
    RefError,
    S3Grant,
    check_output_key,
    parse_image_ref,
    render,
    template_names,
)

DEFAULT_OUTPUT_TEMPLATE = "{id}.mp4"
TEMPLATED_FIELDS = ("prompt", "input_image", "tail_image_url", "output")
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
MAX_PROMPT_CHARS = 10_000
CHECKED_REFS_KEPT = 1024


def _text(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return to_text(value)


Text = Annotated[str, BeforeValidator(_text)]
Bool = Annotated[bool | None, BeforeValidator(to_bool)]


class JobRow(BaseModel):
    """The typed shape of one job; allowed values come from the model's schema."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, BeforeValidator(_text), Field(pattern=ID_PATTERN)] | None = None
    prompt: Annotated[Text, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
    input_image: Annotated[Text, Field(min_length=1, max_length=4096)]
    input_image_has_face: Bool = None
    tail_image_url: Annotated[Text | None, Field(max_length=4096)] = None
    tail_image_url_has_face: Bool = None
    resolution: Text | None = None
    duration: Annotated[int | None, BeforeValidator(to_duration)] = None
    aspect_ratio: Text | None = None
    generate_audio: Bool = None
    watermark: Bool = None
    output: Text | None = None
    # The bounds sit on the int alone: on the union, pydantic 2.14 applies them to None
    # too and raises a TypeError instead of a validation error.
    priority: Annotated[
        Annotated[int, Field(ge=-1000, le=1000)] | None, BeforeValidator(to_int)
    ] = None
    # May its clip replace another job's at its output key (worker.delivery)? Never by
    # default: a later run reusing a key must not silently overwrite a delivered clip.
    overwrite: Bool = None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job ready to register: provider parameters plus seedq's own fields."""

    id: str
    source: str
    line: int
    model: str
    params: dict[str, Any]
    output_key: str
    priority: int = 0
    est_cost: float = 0.0  # the plan's estimate, reserved against a run's budget
    overwrite: bool = False  # not part of its identity: the clip asked for is the same

    @property
    def fingerprint(self) -> str:
        return content_hash(self.model, self.params, self.output_key)

    def to_record(self) -> dict[str, Any]:
        return {**self.fields(), "fingerprint": self.fingerprint}

    def fields(self) -> dict[str, Any]:
        """What :meth:`from_record` needs: the record without its fingerprint, which
        costs a hash to compute."""
        return {
            "id": self.id,
            "source": self.source,
            "line": self.line,
            "model": self.model,
            "params": self.params,
            "output_key": self.output_key,
            "priority": self.priority,
            "est_cost": self.est_cost,
            "overwrite": self.overwrite,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> JobSpec:
        return cls(**{k: v for k, v in record.items() if k != "fingerprint"})


# One encoder for every hash: json.dumps with options builds a new one per call, which
# a 100,000-row manifest pays twice a row.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def content_hash(model: str, params: dict[str, Any], output: str) -> str:
    blob = _CANONICAL.encode([model, params, output])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(slots=True)
class JobContext:
    """What every job of one manifest shares."""

    header: Header
    model: ModelInfo
    base_dir: Path
    sets: dict[str, Any] = field(default_factory=dict)
    allow_private_urls: bool = False
    used_names: set[str] = field(default_factory=set)
    input_root: Path | None = None  # where local images must lie; None: base_dir
    s3_allow: tuple[S3Grant, ...] = ()
    max_output_key_bytes: int = MAX_OUTPUT_KEY_BYTES
    # Image references already checked, and their verdicts (the kept value, or why it
    # was refused): many rows share an image, and a local one costs two realpaths.
    # Bounded, oldest out first, so memory stays flat.
    checked_refs: dict[str, str | RefError] = field(default_factory=dict)

    def image_ref(self, raw: str) -> str:
        """``raw`` checked by :func:`seedq.refs.parse_image_ref` under this context's
        rules (the same for every row), once per distinct value."""
        verdict = self.checked_refs.get(raw)
        if verdict is None:
            try:
                verdict = parse_image_ref(
                    raw,
                    base_dir=self.base_dir,
                    allow_private=self.allow_private_urls,
                    root=self.input_root,
                    s3_allow=self.s3_allow,
                ).value
            except RefError as exc:
                verdict = exc
            if len(self.checked_refs) >= CHECKED_REFS_KEPT:
                del self.checked_refs[next(iter(self.checked_refs))]
            self.checked_refs[raw] = verdict
        if isinstance(verdict, RefError):
            raise RefError(str(verdict))
        return verdict


def _problem(ctx: JobContext, line: int, name: str, message: str) -> Problem:
    return Problem(ctx.header.path, line, name, message)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _pydantic_problems(ctx: JobContext, line: int, exc: ValidationError) -> list[Problem]:
    out = []
    for err in exc.errors(include_url=False):
        name = ".".join(str(part) for part in err["loc"]) or "job"
        if err["type"] == "missing":
            out.append(_problem(ctx, line, name, "is required"))
        elif err["type"] == "extra_forbidden":
            out.append(_problem(ctx, line, name, "is not a job field"))
        elif err["type"] in ("string_too_short", "too_short") and err.get("input") == "":
            out.append(_problem(ctx, line, name, "must not be empty"))
        elif err["type"] == "string_pattern_mismatch" and name == "id":
            out.append(_problem(ctx, line, name, "must be 1-128 letters, digits or . _ : @ -"))
        else:
            msg = err["msg"][0].lower() + err["msg"][1:]
            out.append(_problem(ctx, line, name, f"{msg} (got {_short(err.get('input'))})"))
    return out


def build_job(raw: RawJob, ctx: JobContext) -> JobSpec | list[Problem]:
    """Validate one raw row; every problem of the row is returned, not just the first."""
    line = raw.line
    merged: dict[str, Any] = {**ctx.sets, **ctx.header.defaults, **raw.fields}
    variables = {**ctx.header.variables, **raw.variables}
    problems: list[Problem] = []
    for name in TEMPLATED_FIELDS[:3]:
        if isinstance(merged.get(name), str):
            try:
                ctx.used_names.update(template_names(merged[name]))
                merged[name] = render(merged[name], variables)
            except RefError as exc:
                problems.append(_problem(ctx, line, name, str(exc)))
                merged.pop(name)
    try:
        row = JobRow.model_validate(merged)
    except ValidationError as exc:
        return problems + _pydantic_problems(ctx, line, exc)
    params = _provider_params(row, ctx.model)
    for name, reason in check_params(ctx.model, params).items():
        problems.append(_problem(ctx, line, name, f"{reason} (got {_short(params.get(name))})"))
    for name in ("input_image", "tail_image_url"):
        if isinstance(params.get(name), str):
            try:
                params[name] = ctx.image_ref(params[name])
            except RefError as exc:
                problems.append(_problem(ctx, line, name, str(exc)))
    template = row.output or ctx.header.output or DEFAULT_OUTPUT_TEMPLATE
    try:
        job_id, output_key = _identity(row, ctx, template, params, variables)
    except RefError as exc:
        return [*problems, _problem(ctx, line, "output", str(exc))]
    if problems:
        return problems
    return JobSpec(
        id=job_id,
        source=ctx.header.path,
        line=line,
        model=ctx.model.id,
        params=params,
        output_key=output_key,
        priority=row.priority or 0,
        overwrite=bool(row.overwrite),
    )


def _provider_params(row: JobRow, model: ModelInfo) -> dict[str, Any]:
    """Provider parameters with the schema's defaults made explicit, so a job's identity
    and cost do not shift when the provider changes a default."""
    params: dict[str, Any] = {}
    properties = model.properties  # built on each read: once per job, not per field
    for name in PROVIDER_FIELDS:
        value = getattr(row, name)
        if value is None:
            value = properties.get(name, {}).get("default")
        if value is not None:
            params[name] = value
    return params


def _identity(
    row: JobRow, ctx: JobContext, template: str, params: dict[str, Any], variables: dict[str, str]
) -> tuple[str, str]:
    """The job id and output key. Without an ``id``, the id hashes model, parameters and
    the output key with ``{id}`` left in place, so the two never depend on each other."""
    names = template_names(template)
    ctx.used_names.update(names)
    values = {k: str(v) for k, v in params.items() if k != "prompt"}
    values.update(variables)
    values["id"] = row.id or "{id}"
    partial = render(template, values)
    job_id = row.id or "j" + content_hash(ctx.model.id, params, partial)[:24]
    key = partial.replace("{id}", job_id)
    return job_id, check_output_key(key, max_bytes=ctx.max_output_key_bytes)
