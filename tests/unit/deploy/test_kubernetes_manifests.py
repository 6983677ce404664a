"""The Kubernetes deployment: deploy/kubernetes/busted.yaml (the Helm chart
deploy/helm/busted rendered with its defaults) validated against the Kubernetes schemas
(kubernetes-validate, strict: no unknown fields), and kept in line with the chart.

The helm CLI cannot be installed here (no package of it on PyPI, npm or Debian), so the
chart is not rendered in the tests: instead every literal line of its templates must
appear, in order, in the plain manifest, and the manifest must carry the chart's default
values. The policies ConfigMap is made from policies/ as the manifest's header says."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "deploy/helm/busted"
MANIFEST = REPO / "deploy/kubernetes/busted.yaml"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the schemas are checked against, and the newest:
VERSIONS = (K8S_VERSION, kubernetes_validate.latest_version())


def manifest() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def daemonset() -> dict:
    return next(d for d in manifest() if d["kind"] == "DaemonSet")


def policies_configmap() -> dict:
    """What `kubectl create configmap busted-policies --from-file=policies/` makes."""
    data = {p.name: p.read_text() for p in sorted((REPO / "policies").iterdir()) if p.is_file()}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "busted-policies", "namespace": "busted"}, "data": data}


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version):
    docs = [*manifest(), policies_configmap()]
    assert {d["kind"] for d in docs} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                         "DaemonSet", "ConfigMap"}
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_chart_templates_and_manifest_agree():
    manifest_lines = [line.strip() for line in MANIFEST.read_text().splitlines()]
    for template in ("daemonset.yaml", "rbac.yaml"):
        at = 0
        for line in (CHART / "templates" / template).read_text().splitlines():
            literal = line.strip()
            if not literal or "{{" in literal or literal.startswith("#"):
                continue
            try:
                at = manifest_lines.index(literal, at) + 1
            except ValueError:
                pytest.fail(f"{template}: {literal!r} is not in {MANIFEST.name} (in this order)")


def test_manifest_carries_the_chart_defaults():
    v = values()
    pod = daemonset()["spec"]["template"]
    spec = pod["spec"]
    container = spec["containers"][0]
    assert container["image"] == f"{v['image']['repository']}:{v['image']['tag']}"
    assert container["imagePullPolicy"] == v["image"]["pullPolicy"]
    assert container["resources"] == v["resources"]
    assert spec["tolerations"] == v["tolerations"] and spec["nodeSelector"] == v["nodeSelector"]
    assert spec["priorityClassName"] == v["priorityClassName"]
    port = v["metrics"]["port"]
    assert f"0.0.0.0:{port}" in container["args"]
    assert container["ports"][0]["containerPort"] == port
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    host_paths = {vol["hostPath"]["path"] for vol in spec["volumes"] if "hostPath" in vol}
    assert {v["hostPaths"]["modules"], v["hostPaths"]["src"], v["runtimeDir"]["hostPath"]} <= host_paths


def test_daemonset_has_what_capture_needs():
    spec = daemonset()["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert spec["hostPID"] is True and container["securityContext"]["privileged"] is True
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in ("/lib/modules", "/usr/src", "/etc/busted/policies"):
        assert mounts[path]["readOnly"] is True
    assert {"/sys/kernel/tracing", "/run/busted", "/var/lib/busted"} <= set(mounts)
    assert any(t.get("operator") == "Exists" and "key" not in t for t in spec["tolerations"])


def test_rbac_reads_pods_only():
    role = next(d for d in manifest() if d["kind"] == "ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"],
                              "verbs": ["get", "list", "watch"]}]


def test_chart_ships_every_policy():
    # The chart's ConfigMap template reads policies/*.{rego,json} through a symlink to
    # the repository's policies/.
    assert (CHART / "policies").resolve() == (REPO / "policies").resolve()
    assert '.Files.Glob "policies/*.{rego,json}"' in (CHART / "templates/configmap.yaml").read_text()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "busted"
