"""docker-compose.yml, checked statically (no Docker engine needed): it follows the
Compose Specification, every command is a real entry point of this package with options
its parser accepts, every variable set for seedq is a setting it reads, and every secret
comes from .env by substitution."""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import jsonschema  # type: ignore[import-untyped]
import pytest
import typer.main
import yaml
from celery import Celery
from celery.bin.base import CLIContext
from celery.bin.celery import celery as celery_cli
from pydantic import ValidationError

from cli.main import app as seedq_app
from seedq import contract
from seedq.settings import Settings, env_name

REPO = Path(__file__).resolve().parents[1]
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
# Substitutions are looked for outside comments only.
COMPOSE_CODE = "\n".join(
    line for line in COMPOSE_TEXT.splitlines() if not line.lstrip().startswith("#")
)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# Apache-2.0, from the docker-compose 1.29.2 package: see tests/data/README.md.
SCHEMA = yaml.safe_load((REPO / "tests" / "data" / "compose-spec.json").read_text("utf-8"))
ENV_EXAMPLE = (REPO / ".env.example").read_text(encoding="utf-8")

SEEDQ_IMAGE = "seedq:latest"
SEEDQ_SERVICES = sorted(n for n, s in SERVICES.items() if s.get("image") == SEEDQ_IMAGE)
WORKER_SERVICES = sorted(n for n in SEEDQ_SERVICES if n.startswith("worker-"))
CELERY_SUBCOMMANDS = {"worker", "beat", "flower"}
SECRET_VARS = {"OXEN_API_KEY", "REDIS_PASSWORD", "MINIO_ROOT_PASSWORD", "FLOWER_BASIC_AUTH"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|API_KEY|AUTH|TOKEN|ACCESS_KEY")
STANDARD_ENV = {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "TZ", "LANG", "LC_ALL"}
AWS_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
AWS_ENV |= {"AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EC2_METADATA_DISABLED"}

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME; $$ is "$".
SUBSTITUTION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))"
)


def env_example() -> dict[str, str]:
    """The variables .env.example sets (uncommented lines)."""
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.splitlines() if re.match(r"\w+=", line))
    return {name: value for name, value in pairs}


def env_example_mentions() -> set[str]:
    """Every variable .env.example sets or shows commented out."""
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE, flags=re.MULTILINE))


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's substitution, enough of it for this file."""

    def one(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["bare"]
        op, arg = m["op"] or "", m["arg"] or ""
        present = name in env and (env[name] != "" or not op.startswith(":"))
        if present:
            return env[name]
        if op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op.endswith("-") else ""

    return SUBSTITUTION.sub(one, value)


def interpolated(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: interpolated(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolated(v, env) for v in node]
    return interpolate(node, env) if isinstance(node, str) else node


def references() -> Iterator[tuple[str, str]]:
    """(name, operator) of every substitution in the compose file."""
    for m in SUBSTITUTION.finditer(COMPOSE_CODE):
        if not m["escaped"]:
            yield m["braced"] or m["bare"], m["op"] or ""


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: environment as a mapping, please"
    return {str(k): str(v) for k, v in env.items()}


def setting_variables() -> set[str]:
    return {env_name(name) for name in Settings.model_fields}


def flower_options() -> dict[str, Any]:
    from flower.options import options  # type: ignore[import-untyped]

    return dict(options._options)


# Schema ---------------------------------------------------------------------------------


def validator() -> Any:
    # The schema names draft 2019-09 by a URL jsonschema does not know (http, "#").
    jsonschema.Draft201909Validator.check_schema(SCHEMA)
    return jsonschema.Draft201909Validator(SCHEMA)


@pytest.mark.parametrize("variant", ["as-written", "interpolated-with-env-example"])
def test_compose_file_follows_the_compose_specification(variant: str) -> None:
    document = COMPOSE if variant == "as-written" else interpolated(COMPOSE, env_example())
    errors = sorted(validator().iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def _with(path: list[str], value: Any) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return document


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["services", "redis", "helthcheck"], {"test": ["CMD", "true"]}),
        (["services", "beat", "depends_on", "redis", "condition"], "service_ready"),
        (["services", "flower", "ports"], "5555:5555"),
        (["volumes", "redis-data"], "not-a-mapping"),
        (["bogus"], {}),
    ],
)
def test_the_schema_check_catches_mistakes(path: list[str], value: Any) -> None:
    assert list(validator().iter_errors(_with(path, value)))


# Variables and secrets ------------------------------------------------------------------


def test_every_variable_has_a_default_or_a_value_in_env_example() -> None:
    example = env_example()
    for name, op in references():
        if not op.endswith("-"):
            assert name in example, f"${{{name}}} has no default and .env.example sets none"


def test_env_example_mentions_only_variables_the_stack_uses() -> None:
    used = {name for name, _ in references()}
    for name in env_example_mentions():
        assert name in used, f".env.example mentions {name}, docker-compose.yml never uses it"


@pytest.mark.parametrize("name", sorted(SECRET_VARS))
def test_secrets_are_required_substitutions_with_placeholders(name: str) -> None:
    ops = [op for ref, op in references() if ref == name]
    assert ops, f"{name} is never used"
    assert all(op == ":?" for op in ops), f"{name} must be ${{{name}:?...}}: required, no default"
    assert "change-me" in env_example()[name], f".env.example must hold a placeholder for {name}"


@pytest.mark.parametrize(
    ("service", "name"),
    [(s, n) for s in sorted(SERVICES) for n in environment(s) if SECRET_NAME.search(n)]
    + [(s, n) for s in sorted(SERVICES) for n, v in environment(s).items() if "://:" in v],
)
def test_secret_values_come_from_env_substitution(service: str, name: str) -> None:
    value = environment(service)[name]
    secrets = {m["braced"] for m in SUBSTITUTION.finditer(value) if m["braced"]}
    assert secrets & SECRET_VARS or name == "AWS_ACCESS_KEY_ID", f"{service}.{name} = {value!r}"
    example = env_example()
    for secret in SECRET_VARS:
        assert example[secret] not in value, f"{service}.{name} holds a literal secret"


def test_no_secret_value_is_written_into_the_compose_file() -> None:
    # The placeholders may appear only as what minio-setup refuses (a `case` pattern).
    text = re.sub(r"case .*? esac", "", COMPOSE_TEXT, flags=re.DOTALL)
    for name in SECRET_VARS:
        assert env_example()[name] not in text


# Commands -------------------------------------------------------------------------------


def parse_celery(argv: list[str]) -> click.Context:
    """Parse ``celery -A worker SUB ...`` with Celery's own command line parser."""
    assert argv[:3] == ["celery", "-A", "worker"], argv
    sub, args = argv[3], argv[4:]
    assert sub in celery_cli.commands, f"celery has no {sub!r} command"
    # A bare app for the option types that look at configuration: configuring the real
    # one would read this process's environment.
    bare = Celery("compose-check", set_as_current=False)
    obj = CLIContext(app=bare, no_color=True, workdir=None, quiet=True)
    parent = click.Context(celery_cli, info_name="celery", obj=obj)
    ctx: click.Context = celery_cli.commands[sub].make_context(sub, list(args), parent=parent)
    return ctx


def check_flower_argv(argv: tuple[str, ...]) -> None:
    options = flower_options()
    for arg in argv:
        name, _, value = arg.removeprefix("--").partition("=")
        option = options.get(name.replace("_", "-"))
        assert arg.startswith("--") and option is not None, f"flower has no option {arg!r}"
        if value and option.type is not bool:
            option.type(value)


def command(service: str) -> list[str]:
    argv = SERVICES[service]["command"]
    assert isinstance(argv, list), f"{service}: command as a list (no shell in between)"
    return [str(a) for a in argv]


@pytest.mark.parametrize("service", SEEDQ_SERVICES)
def test_commands_are_real_entry_points(service: str) -> None:
    argv = command(service)
    assert "entrypoint" not in SERVICES[service]
    if argv[0] == "seedq":
        names = [c.name for c in seedq_app.registered_commands]
        assert argv[1] in names, f"seedq has no {argv[1]!r} command ({names})"
        group: Any = typer.main.get_command(seedq_app)  # typer's own copy of click
        group.commands[argv[1]].make_context(argv[1], argv[2:])
        return
    ctx = parse_celery(argv)
    sub = argv[3]
    assert sub in CELERY_SUBCOMMANDS, f"{service}: unexpected celery {sub}"
    if sub == "worker":
        assert ctx.params["queues"], f"{service}: a worker service names its queue (-Q)"
        assert set(ctx.params["queues"]) <= set(contract.ALL_QUEUES), ctx.params["queues"]
    if sub == "flower":
        check_flower_argv(ctx.params["tornado_argv"])


def test_celery_finds_the_worker_app() -> None:
    # As `celery -A worker` does it, in a fresh interpreter: this one's `worker` may be
    # imported differently (editable installs), and the app must not be configured here.
    code = "from celery.app.utils import find_app; print(type(find_app('worker')).__mro__)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "celery.app.base.Celery" in done.stdout


@pytest.mark.parametrize("service", WORKER_SERVICES)
def test_worker_healthcheck_pings_its_own_node(service: str) -> None:
    node = parse_celery(command(service)).params["hostname"]
    assert "%h" in command(service)[command(service).index("-n") + 1]
    probe = SERVICES[service]["healthcheck"]["test"]
    assert probe[0] == "CMD-SHELL"
    argv = shlex.split(probe[1].replace("$$", "$"))
    ctx = parse_celery(argv)
    assert argv[3] == "inspect" and ctx.params["command"] == "ping"
    # The worker is named queue@%h, and %h is the container's hostname, $HOSTNAME.
    assert ctx.params["destination"] == [node.split("@")[0] + "@$HOSTNAME"]


def test_worker_services_cover_every_queue_and_scale() -> None:
    queues = [q for s in WORKER_SERVICES for q in parse_celery(command(s)).params["queues"]]
    assert sorted(queues) == sorted(contract.ALL_QUEUES), "one worker service per queue"
    for service in WORKER_SERVICES:
        spec = SERVICES[service]
        # --scale needs containers without fixed names or host ports.
        assert "container_name" not in spec and "ports" not in spec, service


@pytest.mark.parametrize("service", SEEDQ_SERVICES)
def test_seedq_services_set_only_known_variables(service: str) -> None:
    known = setting_variables() | AWS_ENV | STANDARD_ENV
    if service == "flower":
        known |= {f"FLOWER_{name.upper().replace('-', '_')}" for name in flower_options()}
    for name in environment(service):
        assert name in known, f"{service}: {name} is no setting seedq (or its tools) reads"


# Services -------------------------------------------------------------------------------


def test_redis_is_durable_bounded_and_password_protected() -> None:
    redis = SERVICES["redis"]
    assert redis["image"].startswith("redis:7.")
    line = " ".join(redis["command"])
    assert "--appendonly yes" in line
    assert "--maxmemory-policy noeviction" in line
    assert '--requirepass "$$REDIS_PASSWORD"' in line
    assert any(str(v).endswith(":/data") for v in redis["volumes"])
    probe = " ".join(redis["healthcheck"]["test"])
    assert "redis-cli" in probe and "ping" in probe
    # redis-cli takes the password from REDISCLI_AUTH, so the probe is authenticated.
    assert environment("redis")["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")
    for service in SEEDQ_SERVICES:
        for name, value in environment(service).items():
            if value.startswith("redis://"):
                assert value.startswith("redis://:${REDIS_PASSWORD:?"), f"{service}.{name}"


def test_flower_requires_basic_auth() -> None:
    flower = SERVICES["flower"]
    argv = command("flower")
    assert environment("flower")["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert not any("basic_auth" in a for a in argv), "the password stays off the command line"
    assert "--persistent=False" in argv and "--port=5555" in argv
    assert any(str(p).endswith(":5555") for p in flower["ports"])


def test_flower_task_list_shows_the_ids_and_why_a_task_failed() -> None:
    """Flower's default columns show neither a task's kwargs (run_id, job_id) nor its
    exception (the reason of a FAILURE or RETRY)."""
    [columns] = [a.partition("=")[2] for a in command("flower") if a.startswith("--tasks_columns=")]
    assert {"name", "state", "kwargs", "exception", "worker"} <= set(columns.split(","))


def test_exporter_listens_in_its_container_and_is_published_on_this_host_only() -> None:
    exporter = SERVICES["exporter"]
    assert exporter["image"] == SEEDQ_IMAGE and not exporter.get("profiles")
    group: Any = typer.main.get_command(seedq_app)
    argv = command("exporter")
    params = group.commands["exporter"].make_context("exporter", argv[2:]).params
    # Compose publishes the container's port: it must listen beyond its loopback.
    assert argv[:2] == ["seedq", "exporter"] and params["address"] == "0.0.0.0"
    port = params["port"]
    published = [str(p) for p in exporter["ports"]]
    assert published and all(p.startswith("127.0.0.1:") for p in published), published
    assert all(p.rsplit(":", 1)[1] == str(port) for p in published), published
    probe = " ".join(exporter["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/metrics" in probe
    assert exporter["depends_on"] == {"redis": {"condition": "service_healthy"}}
    # It reads the job store and nothing else: no provider key, no storage credentials.
    env = environment("exporter")
    assert env["SEEDQ_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?")
    assert not {"OXEN_API_KEY", "AWS_SECRET_ACCESS_KEY", "SEEDQ_BROKER_URL"} & set(env)


def test_minio_setup_makes_the_bucket_once_minio_is_healthy() -> None:
    setup = SERVICES["minio-setup"]
    assert setup["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mcli mb --ignore-existing" in " ".join(setup["command"])
    assert setup["restart"] == "no"
    assert "--console-address" in SERVICES["minio"]["command"]


@pytest.mark.parametrize(
    ("service", "target"),
    [(s, t) for s in sorted(SERVICES) for t in SERVICES[s].get("depends_on", {})],
)
def test_dependencies_wait_for_readiness(service: str, target: str) -> None:
    depends = SERVICES[service]["depends_on"]
    assert isinstance(depends, dict), f"{service}: depends_on with conditions"
    condition = depends[target]["condition"]
    if condition == "service_healthy":
        assert "healthcheck" in SERVICES[target], f"{target} has no healthcheck"
    else:
        assert condition == "service_completed_successfully"
        assert SERVICES[target].get("restart") == "no", f"{target} is a one-shot"
    assert not SERVICES[target].get("profiles"), f"{service} needs optional {target}"


def test_pipeline_services_wait_for_redis_and_the_bucket() -> None:
    for service in SEEDQ_SERVICES:
        if "SEEDQ_OUTPUT" in environment(service):
            assert set(SERVICES[service]["depends_on"]) >= {"redis", "minio-setup"}, service


def test_profiles() -> None:
    assert SERVICES["simulator"]["profiles"] == ["demo"]
    assert SERVICES["simulator"]["command"][-4:] == ["--host", "0.0.0.0", "--port", "8100"]
    assert SERVICES["cli"]["profiles"] == ["cli"]
    for name in ("redis", "minio", "minio-setup", "beat", "events", "flower", *WORKER_SERVICES):
        assert not SERVICES[name].get("profiles"), name


# Exposure, placeholders and pins --------------------------------------------------------

# An exact release: a version with a patch number, or a dated RELEASE tag; never a bare
# major (redis:7), a floating name (latest, alpine) or no tag at all.
PINNED_TAG = re.compile(r"^\d+\.\d+\.\d+(-[a-z0-9.]+)?$|^RELEASE\.\d{4}-\d\d-\d\dT[\d-]+Z$")


def published(service: str) -> list[tuple[str, str]]:
    """(host address, the port mapping as written) of each port ``service`` publishes."""
    found = []
    for port in SERVICES[service].get("ports", []):
        if isinstance(port, dict):
            found.append((str(port.get("host_ip", "")), str(port)))
        else:
            # host_ip:host:container, host:container or container alone.
            parts = interpolate(str(port), env_example()).split(":")
            found.append((parts[0] if len(parts) == 3 else "", str(port)))
    return found


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_ports_are_published_on_loopback_only(service: str) -> None:
    for host, port in published(service):
        assert host == "127.0.0.1", f"{service} publishes {port} on every interface"


def test_the_loopback_check_catches_a_port_on_every_interface() -> None:
    document = _with(["services", "flower", "ports"], ["${FLOWER_PORT:-5555}:5555"])
    ports = document["services"]["flower"]["ports"]
    assert [p.split(":")[0] for p in ports] != ["127.0.0.1"]
    assert published("flower") == [("127.0.0.1", "127.0.0.1:${FLOWER_PORT:-5555}:5555")]


@pytest.mark.parametrize("service", sorted(s for s in SERVICES if s not in SEEDQ_SERVICES))
def test_third_party_images_are_pinned_to_a_release(service: str) -> None:
    image = str(SERVICES[service]["image"])
    name, _, tag = image.partition("@")[0].rpartition(":")
    assert name and PINNED_TAG.match(tag), f"{service}: {image} is not pinned to a release"
    # MinIO's own images are withdrawn (community edition archived): not one of them.
    assert not name.startswith(("minio/", "quay.io/minio/")), image


@pytest.mark.parametrize("tag", ["7", "latest", "alpine", "7-alpine", "7.4", "RELEASE"])
def test_the_pin_check_refuses_floating_tags(tag: str) -> None:
    assert not PINNED_TAG.match(tag)


def secret_holders() -> list[str]:
    """The seedq services whose environment holds one of the secrets."""
    return [
        s
        for s in SEEDQ_SERVICES
        if any(SECRET_VARS & set(re.findall(r"\w+", v)) for v in environment(s).values())
    ]


@pytest.mark.parametrize("service", secret_holders())
def test_seedq_services_refuse_the_env_example_placeholders(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack as .env.example leaves it: every seedq process that gets a secret (its
    settings are read first thing) refuses to start, Flower included."""
    for name in list(os.environ):
        if name.startswith(("SEEDQ_", "FLOWER_", "OXEN_")):
            monkeypatch.delenv(name)
    for name, value in interpolated(environment(service), env_example()).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="placeholder") as caught:
        Settings(_env_file=None)
    assert "change-me" not in str(caught.value).replace("'change-me", "")


def _minio_setup(tmp_path: Path, password: str) -> subprocess.CompletedProcess[str]:
    """minio-setup's command, run by a real sh with a stand-in mcli that logs its args."""
    mcli = tmp_path / "mcli"
    mcli.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls"}\n')
    mcli.chmod(0o755)
    env = {**env_example(), "MINIO_ROOT_PASSWORD": password}
    [script] = SERVICES["minio-setup"]["command"]
    assert SERVICES["minio-setup"]["entrypoint"] == ["/bin/sh", "-c"]
    return subprocess.run(
        ["/bin/sh", "-c", script.replace("$$", "$")],
        env={**env, "MINIO_BUCKET": "seedq", "PATH": f"{tmp_path}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("placeholder", ["change-me", "change-me-too"])
def test_minio_setup_refuses_a_placeholder_password(tmp_path: Path, placeholder: str) -> None:
    assert env_example()["MINIO_ROOT_PASSWORD"] in {"change-me", "change-me-too"}
    done = _minio_setup(tmp_path, placeholder)
    assert done.returncode == 2, done
    assert "MINIO_ROOT_PASSWORD" in done.stderr and not (tmp_path / "calls").exists()


def test_minio_setup_makes_the_bucket_with_a_real_password(tmp_path: Path) -> None:
    done = _minio_setup(tmp_path, "9f8e7d6c5b4a")
    assert done.returncode == 0, done
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == [
        "alias set local http://minio:9000 seedq 9f8e7d6c5b4a",
        "mb --ignore-existing local/seedq",
    ]


# The image ------------------------------------------------------------------------------


@functools.cache
def dockerfile() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines)
        if word and not word.startswith("#")
    ]


def test_image_is_slim_unprivileged_and_entrypoint_free() -> None:
    instructions = dockerfile()
    # Pinned to a patch release on a named Debian, like the compose images.
    assert instructions[0] == ("FROM", "python:3.11.14-slim-bookworm")
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert not [word for word, _ in instructions if word in {"ENTRYPOINT", "CMD"}]


def test_image_gets_every_package_and_never_the_env_file() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text("utf-8").splitlines()}
    assert {".env", ".git", ".venv"} <= ignored
    sources = {p for word, rest in dockerfile() if word == "COPY" for p in rest.split()[:-1]}
    for source in sources:
        assert (REPO / source).exists() and source not in ignored, source
    for package in ("seedq", "producer", "worker", "simulator"):
        assert package in sources, f"the image misses {package}/"
    assert {"pyproject.toml", "README.md"} <= sources


def test_the_image_copies_every_package_it_installs() -> None:
    """A package left out of the Dockerfile's COPY lines installs nothing, and every
    process of the stack then fails on its first import."""
    import tomllib

    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    dockerfile = (REPO / "Dockerfile").read_text()
    for pattern in include:
        package = pattern.rstrip("*")
        assert f"COPY {package} ./{package}\n" in dockerfile, package


@pytest.mark.parametrize("name", ["docker-compose.yml", ".env.example"])
def test_every_place_that_sets_allow_private_urls_says_it_turns_the_guard_off(
    name: str,
) -> None:
    """SEEDQ_ALLOW_PRIVATE_URLS=true switches the fetch guard off entirely: whoever sets
    it reads, right there, that it is for the demo only."""
    lines = (REPO / name).read_text(encoding="utf-8").splitlines()
    places = [i for i, line in enumerate(lines) if "SEEDQ_ALLOW_PRIVATE_URLS" in line]
    assert places, name
    for i in places:
        near = " ".join(lines[max(0, i - 5) : i + 2]).lower()
        assert "guard off" in near and "demo" in near, f"{name}:{i + 1}"
