"""deploy/kubernetes/ as the tests read it, without a cluster: each overlay rendered by a
small renderer of the kustomize features it uses (test_core_objects.py compares it with
``kubectl kustomize`` where that is installed), and its objects, pods and containers
looked up by kind and name."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
WORKERS = {f"seedq-worker-{q}": f"worker-{q}" for q in ("submit", "track", "deliver")}
POD_KINDS = {"Deployment", "StatefulSet"}
Obj = dict[str, Any]


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
