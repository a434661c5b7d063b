"""Reading a YAML manifest into raw rows, each field with the line it is written on.

Like every reader it never raises on bad input: problems go to ``header.problems``.

The cost is bounded before anything big is built: the file's bytes (``precheck``, with
the YAML limit), then its nodes, counted on the parser's event stream (no tree yet), then
the values it expands to (aliases and merges counted each time they are used, so an
alias bomb is refused at the same bound). The document is composed by libyaml when
PyYAML has it. Measured on a 2 MB manifest of 10,300 jobs: read in 2.5 s instead of
17 s (validated in 15 s and 95 MB instead of 30 s and 121 MB); a 2 MB list of 690,000
single digits is refused in 1 s and 38 MB instead of being read in 113 s and 479 MB.

YAML 1.1 reads some plain values as numbers that are not what was written
(``aspect_ratio: 16:9`` is 969 in base 60, ``010`` is 8): such a value is refused at its
own line, with the quoting that fixes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import NodeEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from producer.errors import Problem
from producer.readers import (
    JOB_FIELDS,
    YAML_JOB_KEYS,
    YAML_TOP_KEYS,
    Header,
    RawJob,
    decode_problem,
    did_you_mean,
)

# libyaml when PyYAML was built with it (its wheels are): ten times faster, a fraction
# of the memory, and it refuses nesting deeper than 1,000 levels itself.
YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Nodes (keys, values, lists, maps) a YAML manifest may have, and values it may expand
# to: some 16,000 jobs of a few fields, read in a few seconds and well under 100 MB. A
# longer list belongs in a CSV manifest, which is streamed row by row.
YAML_MAX_NODES = 200_000
SAFE_TAGS = frozenset(
    "tag:yaml.org,2002:" + name
    for name in ("str", "int", "float", "bool", "null", "seq", "map", "merge", "timestamp")
)
MERGE_TAG = "tag:yaml.org,2002:merge"
NUMBER_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})
TOO_DEEP = "nested too deeply (lists or maps inside each other thousands of levels down)"


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
        self.line = _line(node)


class _Reader:
    """One document's conversion: the expansion budget and the scalar constructor."""

    def __init__(self, header: Header) -> None:
        self.header = header
        self.budget = _Budget(YAML_MAX_NODES)
        self.ctor = SafeConstructor()
        self.scalars: dict[Node, Any] = {}

    def problem(self, line: int, name: str, message: str) -> None:
        self.header.problems.append(Problem(self.header.path, line, name, message))

    def value(self, node: Node) -> Any:
        """Plain data of a node; aliases cost every time they are expanded."""
        self.budget.spend()
        if node.tag not in SAFE_TAGS:
            raise _BadTag(node)
        if isinstance(node, ScalarNode):
            return self.scalar(node)
        if isinstance(node, SequenceNode):
            return [self.value(child) for child in node.value]
        if isinstance(node, MappingNode):
            return {key: self.value(pair[1]) for key, pair in self.pairs(node).items()}
        raise yaml.YAMLError(f"unsupported YAML node {node.tag}")

    def scalar(self, node: ScalarNode) -> Any:
        # The constructor's own function for the tag: construct_object's bookkeeping
        # (generators, a cache of every node) would double the time of a large manifest.
        # Scalars are immutable: one used through many aliases is constructed once.
        if node in self.scalars:
            return self.scalars[node]
        construct = self.ctor.yaml_constructors.get(node.tag)
        if construct is None:
            raise yaml.YAMLError(f"no constructor for {node.tag}")
        value = self.scalars[node] = construct(self.ctor, node)
        return value

    def pairs(self, node: MappingNode) -> dict[str, tuple[Node, Node]]:
        """A mapping's keys with their key and value nodes, merges (``<<``) flattened:
        the mapping's own keys win, then the earlier merge."""
        own: dict[str, tuple[Node, Node]] = {}
        merged: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                parts = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                if value_node.tag not in SAFE_TAGS:
                    raise _BadTag(value_node)
                for part in parts:
                    self.budget.spend()
                    if part.tag not in SAFE_TAGS:
                        raise _BadTag(part)
                    if isinstance(part, MappingNode):
                        for key, pair in self.pairs(part).items():
                            merged.setdefault(key, pair)
                continue
            key = self.value(key_node)
            own[key if isinstance(key, str) else str(key)] = (key_node, value_node)
        return own | {k: v for k, v in merged.items() if k not in own}

    def field(self, name: str, key_node: Node, value_node: Node) -> Any:
        """A field's value. One YAML read as a surprising number is refused at its line
        and kept as written, so the rules of fields do not report it a second time."""
        value = self.value(value_node)
        if isinstance(value_node, ScalarNode) and _read_as_number(value_node, value):
            text = value_node.value
            base = " (base 60)" if ":" in text else ""
            self.problem(
                _line(key_node),
                name,
                f"YAML read {text} as the number {value}{base}; "
                f'it must be quoted: {name.rpartition(".")[2]}: "{text}"',
            )
            return text
        return value

    def variables(self, name: str, key_node: Node, node: Node) -> dict[str, str]:
        """A ``vars`` mapping, its values as text."""
        if not isinstance(node, MappingNode):
            if self.value(node) is not None:
                self.problem(_line(key_node), name, "must be a mapping")
            return {}
        found: dict[str, str] = {}
        for key, (k_node, v_node) in self.pairs(node).items():
            value = self.field(f"{name}.{key}", k_node, v_node)
            found[key] = "" if value is None else str(value)
        return found


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _read_as_number(node: ScalarNode, value: Any) -> bool:
    """Whether YAML 1.1 read a plain scalar as a number that is not what it says:
    ``16:9`` is 969 (base 60), ``010`` is 8, ``0x10`` is 16, ``1.10`` is 1.1."""
    if node.tag not in NUMBER_TAGS or node.style not in (None, ""):
        return False
    text = str(node.value)
    return text.lstrip("+").replace("_", "") != str(value)


def _too_many_nodes(text: str) -> bool:
    """Whether the document has more than ``YAML_MAX_NODES`` nodes, counted on the
    parser's events (nothing is kept) and stopping at the first one over."""
    nodes = 0
    for event in yaml.parse(text, Loader=YAML_LOADER):
        if isinstance(event, NodeEvent):
            nodes += 1
            if nodes > YAML_MAX_NODES:
                return True
    return False


def load_yaml(path: Path) -> tuple[Header, list[RawJob]]:
    """Parse a YAML manifest; problems go to ``header.problems``."""
    shown = str(path)
    header = Header(shown, "yaml")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        header.problems.append(decode_problem(shown, data, exc))
        return header, []
    del data
    try:
        if _too_many_nodes(text):
            too_many = (
                f"has more than {YAML_MAX_NODES} values (keys, values, lists and maps); "
                "split it, or use a CSV manifest for long job lists"
            )
            header.problems.append(Problem(shown, 1, "yaml", too_many))
            return header, []
        root = yaml.compose(text, Loader=YAML_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        header.problems.append(Problem(shown, line, "yaml", f"{exc.problem or exc.context}"))
        return header, []
    except yaml.YAMLError as exc:
        header.problems.append(Problem(shown, 0, "yaml", str(exc)))
        return header, []
    except RecursionError:  # the pure-Python composer recurses: [[[[... thousands deep
        header.problems.append(Problem(shown, 1, "yaml", TOO_DEEP))
        return header, []
    if not isinstance(root, MappingNode):
        header.problems.append(
            Problem(
                shown, 1, "file", "must be a mapping with a 'jobs:' list (see manifests/README.md)"
            )
        )
        return header, []
    try:
        return header, _read_top(_Reader(header), root)
    except _TooBig:
        bomb = f"expands to more than {YAML_MAX_NODES} values (an alias bomb?)"
        header.problems.append(Problem(shown, 1, "yaml", bomb))
    except _BadTag as exc:
        header.problems.append(Problem(shown, exc.line, "yaml", f"tag {exc} is not allowed"))
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        header.problems.append(Problem(shown, 1, "yaml", f"unreadable value: {exc}"))
    except RecursionError:
        header.problems.append(Problem(shown, 1, "yaml", TOO_DEEP))
    return header, []


def _read_top(reader: _Reader, root: MappingNode) -> list[RawJob]:
    header = reader.header
    jobs: list[RawJob] = []
    jobs_seen = False
    for key_node, value_node in root.value:
        line = _line(key_node)
        key = str(reader.value(key_node))
        if key not in YAML_TOP_KEYS:
            reader.problem(line, key, "unknown top-level key" + did_you_mean(key, YAML_TOP_KEYS))
        elif key in ("model", "name", "output"):
            value = reader.value(value_node)
            if value is not None and not isinstance(value, str):
                reader.problem(line, key, "must be text")
            else:
                setattr(header, key, value)
        elif key == "vars":
            header.variables = reader.variables(key, key_node, value_node)
        elif key == "defaults":
            _read_defaults(reader, key_node, value_node)
        else:
            jobs_seen = True
            jobs = _read_jobs(reader, value_node)
    if not jobs_seen:
        reader.problem(1, "jobs", "missing: a manifest needs a 'jobs:' list")
    return jobs


def _read_defaults(reader: _Reader, key_node: Node, node: Node) -> None:
    if not isinstance(node, MappingNode):
        if reader.value(node) is not None:
            reader.problem(_line(key_node), "defaults", "must be a mapping")
        return
    defaults: dict[str, Any] = {}
    for name, (k_node, v_node) in reader.pairs(node).items():
        if name not in JOB_FIELDS or name == "id":
            hint = did_you_mean(name, JOB_FIELDS) if name != "id" else " (ids cannot be shared)"
            reader.problem(_line(k_node), f"defaults.{name}", "unknown field" + hint)
            continue
        defaults[name] = reader.field(f"defaults.{name}", k_node, v_node)
    reader.header.defaults = defaults


def _read_jobs(reader: _Reader, node: Node) -> list[RawJob]:
    if node.tag not in SAFE_TAGS:
        raise _BadTag(node)
    if not isinstance(node, SequenceNode):
        reader.problem(_line(node), "jobs", "must be a list")
        return []
    jobs: list[RawJob] = []
    for item in node.value:
        if item.tag not in SAFE_TAGS:
            raise _BadTag(item)
        if not isinstance(item, MappingNode):
            reader.value(item)  # counted, and its tags checked, like every value
            reader.problem(_line(item), "job", "must be a mapping of fields")
            continue
        jobs.append(_read_job(reader, item))
    if not jobs and not reader.header.problems:
        reader.problem(_line(node), "jobs", "the list is empty")
    return jobs


def _read_job(reader: _Reader, item: MappingNode) -> RawJob:
    job = RawJob(_line(item), {})
    known = len(reader.header.problems)
    for name, (key_node, value_node) in reader.pairs(item).items():
        job.lines[name] = _line(key_node)
        if name == "vars":
            job.variables = reader.variables(name, key_node, value_node)
        elif name in JOB_FIELDS:
            job.fields[name] = reader.field(name, key_node, value_node)
        else:
            reader.value(value_node)
            hint = did_you_mean(name, YAML_JOB_KEYS)
            reader.problem(job.lines[name], name, "unknown field" + hint)
    job.invalid = len(reader.header.problems) > known
    return job
