"""deploy/kubernetes/, checked without a cluster: each overlay rendered (by a small
renderer of the kustomize features it uses, compared with ``kubectl kustomize`` where
that is installed); the core objects validated with kubernetes-validate, the
ScaledObjects with KEDA's CRD schema; every pod hardened, probed and bounded; the
commands those of docker-compose.yml; every Secret key the pods read present in the
example Secret, whose every value seedq refuses; every ConfigMap key a setting; KEDA
scaling each worker Deployment on metrics the exporter serves, up from zero as soon as
a run is submitted."""

from __future__ import annotations

import copy
import functools
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import fakeredis
import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic import ValidationError

from producer.submit import submit
from producer.timing import RunTiming, TimedStore
from seedq import contract
from seedq.admission import Admission
from seedq.gauges import QueueCollector
from seedq.settings import Settings, env_name, load_settings
from seedq.store import JobStore
from tests.test_deploy import metric_names, served
from tests.test_gauges import scrape

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "kubernetes"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text("utf-8"))
KEDA_CRD = REPO / "tests" / "data" / "keda" / "keda.sh_scaledobjects.yaml"
SHARED_CRD = REPO.parent / "shared" / "schemas" / "keda" / KEDA_CRD.name
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
WORKERS = {f"seedq-worker-{q}": f"worker-{q}" for q in ("submit", "track", "deliver")}
# Deployment -> its docker-compose.yml service.
MIRRORS = {**WORKERS, "seedq-beat": "beat", "seedq-events": "events"}
MIRRORS |= {"seedq-exporter": "exporter", "seedq-flower": "flower"}
POD_KINDS = {"Deployment", "StatefulSet"}
# boto3's own variables, which the ConfigMap may hold beside seedq's settings.
BOTO_ENV = {"AWS_DEFAULT_REGION", "AWS_REGION"}
SECRET_VALUES = {"SEEDQ_BROKER_URL", "SEEDQ_REDIS_URL", "OXEN_API_KEY", "FLOWER_BASIC_AUTH"}
Obj = dict[str, Any]


# -- rendering -------------------------------------------------------------------------


def load_docs(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text("utf-8")) if d]


def render(folder: Path) -> list[Obj]:
    """What ``kubectl kustomize folder`` prints, for the features used here: resources
    (files and folders), namespace, images, and JSON 6902 patches by kind and name."""
    spec: Obj = yaml.safe_load((folder / "kustomization.yaml").read_text("utf-8"))
    unknown = set(spec) - KUSTOMIZE_KEYS
    assert not unknown, f"{folder}: this test's renderer does not know {sorted(unknown)}"
    objs: list[Obj] = []
    for entry in spec.get("resources", []):
        path = (folder / entry).resolve()
        objs += render(path) if path.is_dir() else load_docs(path)
    for patch in spec.get("patches", []):
        target = patch["target"]
        hits = [o for o in objs if all(o[k] == v for k, v in _target_fields(o, target))]
        assert hits, f"{folder}: a patch targets nothing: {target}"
        for obj in hits:
            for op in yaml.safe_load(patch["patch"]):
                _apply_op(obj, op)
    for image in spec.get("images", []):
        for container in (c for o in objs for c in containers(o)):
            if container["image"].split(":")[0] == image["name"]:
                container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    if "namespace" in spec:
        for obj in objs:
            if obj["kind"] != "Namespace":
                obj["metadata"]["namespace"] = spec["namespace"]
    return objs


def _target_fields(obj: Obj, target: Obj) -> Iterator[tuple[str, Any]]:
    assert set(target) <= {"kind", "name"}, target
    yield "kind", target["kind"]
    if "name" in target:
        yield "metadata", {**obj["metadata"], "name": target["name"]}


def _apply_op(obj: Obj, op: Obj) -> None:
    assert op["op"] == "replace", op
    *parents, last = op["path"].lstrip("/").split("/")
    node: Any = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    assert key in range(len(node)) if isinstance(node, list) else key in node, op
    node[key] = op["value"]  # kustomize's replace, too, needs the path to exist


@functools.cache
def rendered(overlay: str) -> tuple[Obj, ...]:
    return tuple(render(K8S / "overlays" / overlay))


def objects(overlay: str, kind: str | None = None) -> list[Obj]:
    return [copy.deepcopy(o) for o in rendered(overlay) if kind in (None, o["kind"])]


def by_name(overlay: str, kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects(overlay, kind)}


def containers(obj: Obj) -> list[Obj]:
    if obj["kind"] not in POD_KINDS:
        return []
    return list(obj["spec"]["template"]["spec"]["containers"])


def pods(overlay: str) -> Iterator[tuple[str, Obj]]:
    for obj in objects(overlay):
        if obj["kind"] in POD_KINDS:
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def sort_key(obj: Obj) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_renderer_agrees_with_kubectl_kustomize(overlay: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    theirs = sorted((d for d in yaml.safe_load_all(out) if d), key=sort_key)
    assert sorted(objects(overlay), key=sort_key) == theirs


# -- schemas ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_follow_the_kubernetes_schema(overlay: str, version: str) -> None:
    core = [o for o in objects(overlay) if not o["apiVersion"].startswith("keda.sh/")]
    assert core
    for obj in core:
        kubernetes_validate.validate(obj, version, strict=True)


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists the known ones, as
    `kubectl apply` does (the API server would otherwise drop a misspelt field)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    return [strict(v) for v in schema] if isinstance(schema, list) else schema


@functools.cache
def scaledobject_schema() -> Obj:
    crd = yaml.safe_load(KEDA_CRD.read_text("utf-8"))
    [version] = [v for v in crd["spec"]["versions"] if v["storage"]]
    schema: Obj = strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["apiVersion"]["enum"] = [f"keda.sh/{version['name']}"]
    return schema


def test_the_keda_schema_is_the_shared_one() -> None:
    if not SHARED_CRD.exists():
        pytest.skip("no ../shared beside this clone")
    assert KEDA_CRD.read_bytes() == SHARED_CRD.read_bytes()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaledobjects_follow_kedas_crd(overlay: str) -> None:
    keda = [o for o in objects(overlay) if o["apiVersion"].startswith("keda.sh/")]
    assert {o["kind"] for o in keda} == {"ScaledObject"}
    for obj in keda:
        jsonschema.validate(obj, scaledobject_schema())
    wrong = objects(overlay, "ScaledObject")[0]
    wrong["spec"]["minReplicas"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, scaledobject_schema())


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


def test_workers_are_scaled_by_keda_and_others_are_not() -> None:
    deployments = by_name("example", "Deployment")
    scaled = by_name("example", "ScaledObject")
    targets = {o["spec"]["scaleTargetRef"]["name"] for o in scaled.values()}
    assert targets == set(WORKERS) and len(scaled) == len(WORKERS)
    for name in WORKERS:
        assert "replicas" not in deployments[name]["spec"], f"{name}: KEDA sets it"
    for name in set(deployments) - set(WORKERS):
        assert deployments[name]["spec"]["replicas"] == 1, name
    budgets = by_name("example", "PodDisruptionBudget")
    for name in WORKERS:
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert "minAvailable" not in budgets[name]["spec"], "a drain at zero replicas"


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


# -- autoscaling ------------------------------------------------------------------------


def triggers(overlay: str) -> Iterator[tuple[str, Obj]]:
    for name, obj in by_name(overlay, "ScaledObject").items():
        for trigger in obj["spec"]["triggers"]:
            yield name, trigger


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_reads_what_the_exporter_serves_where_the_overlay_says(overlay: str) -> None:
    for name, trigger in triggers(overlay):
        assert trigger["type"] == "prometheus", name
        meta = trigger["metadata"]
        assert ".invalid" not in meta["serverAddress"], f"{name}: set by the overlay"
        assert metric_names(meta["query"]) <= served() | {"vector"}, meta["query"]
        assert meta["activationThreshold"] == "0", "any waiting job wakes the workers"
        assert meta["ignoreNullValues"] == "false", "an absent series is no zero"
    for name, obj in by_name(overlay, "ScaledObject").items():
        assert obj["spec"]["minReplicaCount"] == 0, name
        queue = name.removeprefix("seedq-worker-")
        demand = obj["spec"]["triggers"][0]["metadata"]["query"]
        assert demand == f'max(seedq_queue_demand_jobs{{queue="{queue}"}})', name


def evaluate(query: str, samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    """The two query shapes the ScaledObjects use, evaluated over one scrape."""

    def select(metric: str, label: str, value: str) -> list[float]:
        return [v for (n, labels), v in samples.items() if n == metric and (label, value) in labels]

    selector = r'(\w+)\{(\w+)="(\w+)"\}'
    if m := re.fullmatch(rf"max\({selector}\)", query):
        return max(select(*m.groups()))
    m = re.fullmatch(rf"clamp_max\(sum\({selector}\) or vector\(0\), (\d+)\)", query)
    assert m, f"no evaluator for {query}"
    return min(sum(select(*m.groups()[:3])), float(m[4]))


def activations(client: fakeredis.FakeRedis) -> dict[str, bool]:
    """Which worker Deployments KEDA would start from zero, by one exporter scrape."""
    samples = scrape(QueueCollector(JobStore(client), lambda: []))
    active: dict[str, bool] = {}
    for name, trigger in triggers("example"):
        meta = trigger["metadata"]
        value = evaluate(meta["query"], samples)
        active[name] = active.get(name, False) or value > float(meta["activationThreshold"])
    return active


class Job:
    def __init__(self, i: int) -> None:
        self.id, self.fingerprint = f"job-{i}", f"fp-{i}"

    def to_record(self) -> dict[str, object]:
        return {"prompt": "p", "est_cost": 1.0, "fingerprint": self.fingerprint}


def submit_run(client: fakeredis.FakeRedis, timing: RunTiming) -> list[contract.JobMessage]:
    """`seedq submit` with no worker running: what it sends waits in the broker."""
    sent: list[contract.JobMessage] = []

    def send(task: str, messages: Sequence[contract.JobMessage], countdown_s: float = 0.0) -> None:
        sent.extend(messages)

    store = TimedStore(client, timing, clock=lambda: 1_800_000_000.0)
    admission = Admission(store, max_in_flight=2, lease_s=60)
    jobs = [Job(i) for i in range(3)]
    submit(jobs, store, send, admission=admission, name="t", manifests=["m.csv"])  # type: ignore[arg-type]
    return sent


def test_a_submitted_run_wakes_the_submit_workers() -> None:
    client = fakeredis.FakeRedis()
    assert activations(client) == dict.fromkeys(WORKERS, False), "zero when nothing waits"
    assert len(submit_run(client, RunTiming())) == 2  # admitted at once; one waits
    woken = activations(client)
    assert woken["seedq-worker-submit"]
    assert not woken["seedq-worker-track"] and not woken["seedq-worker-deliver"]


def test_a_run_held_for_later_keeps_one_submit_worker_for_the_tick() -> None:
    """`submit --at`: nothing is admitted, so no demand; its start is the tick's, which
    runs in the workers: one submit worker must be up to start it on time."""
    client = fakeredis.FakeRedis()
    assert submit_run(client, RunTiming(start_at=1_900_000_000.0)) == []
    samples = scrape(QueueCollector(JobStore(client), lambda: []))
    assert samples[("seedq_queue_demand_jobs", (("queue", "submit"),))] == 0
    assert activations(client)["seedq-worker-submit"]
