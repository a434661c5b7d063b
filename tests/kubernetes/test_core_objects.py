"""deploy/kubernetes/'s core objects: each overlay as ``kubectl kustomize`` renders it,
and valid for kubernetes-validate (strict) on Kubernetes 1.30 and the latest version it
knows. The ScaledObjects are test_keda.py's."""

from __future__ import annotations

import shutil
import subprocess

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.kubernetes.manifests import K8S, OVERLAYS, objects, sort_key

K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


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


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_follow_the_kubernetes_schema(overlay: str, version: str) -> None:
    core = [o for o in objects(overlay) if not o["apiVersion"].startswith("keda.sh/")]
    assert core
    for obj in core:
        kubernetes_validate.validate(obj, version, strict=True)
