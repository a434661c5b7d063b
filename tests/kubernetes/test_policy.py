"""deploy/kubernetes/'s policies: every pod hardened, probed and bounded, with the grace
a warm shutdown needs; the commands those of docker-compose.yml; every Secret key the
pods read present in the example Secret, whose every value seedq refuses; every
ConfigMap key a setting."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from seedq.settings import Settings, env_name, load_settings
from tests.kubernetes.manifests import OVERLAYS, REPO, WORKERS, Obj, by_name, objects, pods

COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text("utf-8"))
# Deployment -> its docker-compose.yml service.
MIRRORS = {**WORKERS, "seedq-beat": "beat", "seedq-events": "events"}
MIRRORS |= {"seedq-exporter": "exporter", "seedq-flower": "flower"}
# boto3's own variables, which the ConfigMap may hold beside seedq's settings.
BOTO_ENV = {"AWS_DEFAULT_REGION", "AWS_REGION"}
SECRET_VALUES = {"SEEDQ_BROKER_URL", "SEEDQ_REDIS_URL", "OXEN_API_KEY", "FLOWER_BASIC_AUTH"}


# -- pods -------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_unprivileged_on_a_read_only_root(overlay: str) -> None:
    for name, pod in pods(overlay):
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["serviceAccountName"] == "seedq", name
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        if name != "seedq-redis":
            assert context["runAsUser"] == 10001, f"{name}: the Dockerfile's user"
        emptydirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in pod["containers"]:
            own = container["securityContext"]
            assert own["allowPrivilegeEscalation"] is False, name
            assert own["readOnlyRootFilesystem"] is True, name
            assert own["capabilities"] == {"drop": ["ALL"]}, name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in emptydirs, f"{name}: /tmp is writable"
    [account] = objects(overlay, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_bounded_and_probed(overlay: str) -> None:
    for name, pod in pods(overlay):
        assert pod["terminationGracePeriodSeconds"] >= 10, name
        for container in pod["containers"]:
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), name
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in container, f"{name} has no {probe}"
            for volume in pod["volumes"]:
                if "emptyDir" in volume:
                    assert "sizeLimit" in volume["emptyDir"], f"{name}: {volume['name']}"


def test_workers_are_pinged_by_their_node_name() -> None:
    for name, pod in pods("example"):
        if name not in WORKERS:
            continue
        [container] = pod["containers"]
        command = container["command"]
        node = command[command.index("-n") + 1]
        assert node.endswith("@%h")
        for probe in ("readinessProbe", "livenessProbe"):
            script = container[probe]["exec"]["command"]
            assert script[:2] == ["sh", "-c"]
            assert f'-d "{node[:-3]}@$HOSTNAME"' in script[2], name
            assert container[probe]["periodSeconds"] >= 60, f"{name}: a ping is heavy"


def test_a_delivery_in_progress_has_time_to_end() -> None:
    """SIGTERM starts a warm shutdown: the deliver worker's grace covers a whole
    download (SEEDQ_DOWNLOAD_DEADLINE_S) with time to check and store the clip."""
    deadline_s = Settings.model_fields["download_deadline_s"].default
    grace = {name: pod["terminationGracePeriodSeconds"] for name, pod in pods("example")}
    assert grace["seedq-worker-deliver"] >= deadline_s + 60
    assert compose_grace_s("worker-deliver") <= grace["seedq-worker-deliver"]
    for worker in WORKERS:
        assert grace[worker] >= 60, worker


def compose_grace_s(service: str) -> int:
    said = str(COMPOSE["services"][service].get("stop_grace_period", "10s"))
    number, unit = re.fullmatch(r"(\d+)([sm])", said).groups()  # type: ignore[union-attr]
    return int(number) * (60 if unit == "m" else 1)


def test_beat_is_one_and_never_two() -> None:
    beat = by_name("example", "Deployment")["seedq-beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    [container] = beat["spec"]["template"]["spec"]["containers"]
    schedule = Path(container["command"][container["command"].index("-s") + 1])
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(schedule.parent) in mounts, "beat writes its schedule file in an emptyDir"


def test_the_commands_are_docker_composes() -> None:
    deployments = by_name("example", "Deployment")
    assert set(deployments) == set(MIRRORS)
    for name, service in MIRRORS.items():
        [container] = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["command"] == COMPOSE["services"][service]["command"], name


def test_services_stay_inside_the_cluster() -> None:
    services = by_name("example", "Service")
    assert set(services) == {"seedq-exporter", "seedq-flower"}
    for service in services.values():
        assert service["spec"]["type"] == "ClusterIP"
    exporter = services["seedq-exporter"]["metadata"]["annotations"]
    assert exporter["prometheus.io/scrape"] == "true"
    assert exporter["prometheus.io/port"] == "9464"
    assert not objects("example", "Ingress")


# -- settings and secrets ---------------------------------------------------------------


def configmap(overlay: str) -> dict[str, str]:
    return dict(by_name(overlay, "ConfigMap")["seedq-settings"]["data"])


def test_the_configmap_holds_settings_and_no_secret() -> None:
    settings = {env_name(field) for field in Settings.model_fields}
    data = configmap("example")
    assert set(data) - BOTO_ENV <= settings, set(data) - BOTO_ENV - settings
    assert not set(data) & (SECRET_VALUES | {"SEEDQ_NOTIFY_SECRET", "AWS_SECRET_ACCESS_KEY"})
    assert data["SEEDQ_ALLOW_PRIVATE_URLS"] == "false"


def container_env(
    overlay: str, container: Obj, secret: dict[str, str]
) -> tuple[dict[str, str], set[str]]:
    """The environment a container starts with (the Secret's optional keys absent), and
    which of its variables come from the Secret."""
    env: dict[str, str] = {}
    from_secret: set[str] = set()
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == "seedq-settings", source
        env |= configmap(overlay)
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "seedq", var
        if ref["key"] in secret:
            env[var["name"]] = secret[ref["key"]]
            from_secret.add(var["name"])
        else:
            assert ref.get("optional") is True, f"{var['name']}: no such key in the Secret"
    return env, from_secret


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_pod_refuses_the_example_secrets_placeholders(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every seedq pod gets at least one secret; with the example's it stops at once,
    naming each one it got (seedq/settings.py, weak_secrets); with real ones it starts.
    Every key of the example is refused by some pod (REDIS_PASSWORD by Redis's own)."""
    example = by_name(overlay, "Secret")["seedq"]
    assert "data" not in example, "placeholders in plain sight: stringData"
    secret = example["stringData"]
    real = {k: v.replace("change-me", secrets.token_hex(8)) for k, v in secret.items()}
    refused: set[str] = set()
    for name, pod in pods(overlay):
        if name == "seedq-redis":
            continue
        [container] = pod["containers"]
        env, got = container_env(overlay, container, secret)
        assert got, f"{name} gets no secret"
        with pytest.raises(ValidationError) as error:
            settings_from(env, monkeypatch)
        for var in got:
            assert var in str(error.value), f"{name}: the example's {var} is not refused"
        refused |= got
        settings_from(container_env(overlay, container, real)[0], monkeypatch)
    assert set(secret) - {"REDIS_PASSWORD"} <= refused


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    ours = {"OXEN_API_KEY", "FLOWER_BASIC_AUTH"}
    for name in list(os.environ):
        if name.startswith(("SEEDQ_", "AWS_")) or name in ours:
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def test_the_redis_pod_refuses_a_placeholder_password(tmp_path: Path) -> None:
    """Its own check, before redis-server (here a stand-in that says it started)."""
    [redis_pod] = [pod for name, pod in pods("redis-statefulset") if name == "seedq-redis"]
    [container] = redis_pod["containers"]
    script = container["command"][2]
    assert "--appendonly yes" in script and "--hash-max-listpack-value 1024" in script
    assert "--maxmemory-policy noeviction" in script
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho started\n")
    fake.chmod(0o755)
    path = f"{tmp_path}:{os.environ['PATH']}"
    for password, code in (("change-me", 2), ("", 2), (secrets.token_hex(8), 0)):
        env = {"PATH": path, "REDIS_PASSWORD": password}
        done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
        assert done.returncode == code, (password, done.stderr)
        assert ("started" in done.stdout) is (code == 0)
