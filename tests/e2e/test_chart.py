"""The Helm chart, rendered by the real helm binary: lint, CRDs identical to the
generated ones, the values schema, security promises; and (on the cluster) its
manifests accepted by the API server and `helm install` creating the operator."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import yaml

from tests.kube import ROOT, get, wait_for

pytestmark = pytest.mark.e2e

CHART = ROOT / "charts" / "kubetune"
ALL_ON = ROOT / "tests" / "manifests" / "values-all-on.yaml"


@pytest.fixture
def helm(binaries):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(binaries["helm"]), *args], capture_output=True, text=True)

    return run


def render(helm, *args: str) -> list[dict]:
    done = helm("template", "kt", str(CHART), "--namespace", "kubetune-system", *args)
    assert done.returncode == 0, done.stderr
    return [o for o in yaml.safe_load_all(done.stdout) if o]


def by_kind(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_lint_strict(helm):
    done = helm("lint", "--strict", str(CHART))
    assert done.returncode == 0, done.stdout + done.stderr


def test_chart_crds_are_the_generated_crds(helm):
    rendered = [o for o in render(helm) if o["kind"] == "CustomResourceDefinition"]
    generated = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    for crd in rendered:
        assert crd["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
    assert sorted(rendered, key=lambda c: c["metadata"]["name"]) == sorted(
        generated, key=lambda c: c["metadata"]["name"]
    )


def test_crds_can_be_left_out_or_not_kept(helm):
    assert not [
        o
        for o in render(helm, "--set", "crds.enabled=false")
        if o["kind"] == "CustomResourceDefinition"
    ]
    for crd in (
        o
        for o in render(helm, "--set", "crds.keep=false")
        if o["kind"] == "CustomResourceDefinition"
    ):
        assert not crd["metadata"].get("annotations")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ("--set", "imagePullSecret=x"),
            "additional properties 'imagePullSecret' not allowed",
            id="misspelled-key",
        ),
        pytest.param(
            ("--set", "local.gpuResources=x"),
            "additional properties 'gpuResources' not allowed",
            id="misspelled-nested-key",
        ),
        pytest.param(("--set", "crds.enabled=yes"), "got string, want boolean", id="wrong-type"),
        pytest.param(("--set", "logFormat=xml"), "value must be one of", id="bad-enum"),
        pytest.param(
            ("--set", "foundry.workspace.name=ml-eastus2"),
            "foundry.workspace needs subscriptionId, resourceGroup and name together",
            id="partial-foundry-workspace",
        ),
        pytest.param(("--set", "foundry.pollInterval=0"), "exclusiveMinimum", id="zero-poll"),
        pytest.param(("--set", "workers=0"), "minimum", id="no-workers"),
        pytest.param(
            ("--set", "local.referenceTimeout=-1"), "exclusiveMinimum", id="negative-timeout"
        ),
    ],
)
def test_values_schema_rejects_mistakes(helm, args, message):
    done = helm("template", "kt", str(CHART), *args)
    assert done.returncode != 0
    assert message in done.stderr


def test_template_renders_a_restricted_operator(helm):
    objects = by_kind(render(helm, "--set", "watchNamespaces={team-a,team-b}"))
    deployment = objects[("Deployment", "kt-operator")]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--namespace=team-a" in container["args"]
    assert "--namespace=team-b" in container["args"]
    assert "--progress-url=http://kt-operator.kubetune-system.svc:8080" in container["args"]
    assert "--workers=50" in container["args"]
    assert "--reference-timeout=300" in container["args"]
    binding = objects[("ClusterRoleBinding", "kt-operator")]
    assert binding["subjects"][0] == {
        "kind": "ServiceAccount",
        "name": "kt-operator",
        "namespace": "kubetune-system",
    }
    assert ("PodDisruptionBudget", "kt-operator") not in objects
    assert ("ServiceMonitor", "kt-operator") not in objects


def test_every_option_renders(helm):
    objects = by_kind(render(helm, "-f", str(ALL_ON)))
    pod = objects[("Deployment", "kt-operator")]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "registry.example.com/kubetune-operator:0.1.0"
    assert "--gpu-resource=amd.com/gpu" in container["args"]
    assert "--default-output-pvc=kubetune-models" in container["args"]
    assert "--peering=kt-operator" in container["args"]
    assert "--workers=8" in container["args"]
    assert "--reference-timeout=600" in container["args"]
    assert ("CustomResourceDefinition", "kopfpeerings.kopf.dev") in objects
    assert "strategy" not in objects[("Deployment", "kt-operator")]["spec"]
    assert pod["metadata"]["labels"]["team"] == "ml-platform"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert objects[("ServiceAccount", "kubetune")]["metadata"]["annotations"]
    assert objects[("PodDisruptionBudget", "kt-operator")]["spec"]["maxUnavailable"] == 1
    monitor = objects[("ServiceMonitor", "kt-operator")]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_readme_install_values_set_the_images(helm):
    """The README's `helm install` flags."""
    objects = by_kind(
        render(
            helm,
            "--set",
            "local.trainerImage=REGISTRY/kubetune-trainer:0.1.0",
            "--set",
            "image.repository=REGISTRY/kubetune-operator",
            "--set",
            "image.tag=0.1.0",
        )
    )
    (container,) = objects[("Deployment", "kt-operator")]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "REGISTRY/kubetune-operator:0.1.0"
    assert "--trainer-image=REGISTRY/kubetune-trainer:0.1.0" in container["args"]


def test_workload_identity_values(helm):
    """The README's Foundry setup: the ServiceAccount names the Azure identity and the pod
    opts in to the Workload Identity webhook; without a client id, neither."""
    plain = by_kind(render(helm))
    assert not plain[("ServiceAccount", "kt-operator")]["metadata"].get("annotations")
    labels = plain[("Deployment", "kt-operator")]["spec"]["template"]["metadata"]["labels"]
    assert "azure.workload.identity/use" not in labels
    objects = by_kind(
        render(
            helm,
            "--set",
            "foundry.workloadIdentity.clientId=CLIENT_ID",
            "--set",
            "foundry.workloadIdentity.tenantId=TENANT_ID",
        )
    )
    account = objects[("ServiceAccount", "kt-operator")]
    assert account["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": "CLIENT_ID",
        "azure.workload.identity/tenant-id": "TENANT_ID",
    }
    pod = objects[("Deployment", "kt-operator")]["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    # The federated credential's subject: system:serviceaccount:kubetune-system:kt-operator.
    assert pod["spec"]["serviceAccountName"] == "kt-operator"


# A minimal stand-in for the Prometheus Operator's CRD, so the API server can
# dry-run a ServiceMonitor (the real CRD's schema is not needed for that).
SERVICEMONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {"kind": "ServiceMonitor", "plural": "servicemonitors"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


@pytest.mark.cluster
@pytest.mark.parametrize(
    "values", [pytest.param((), id="defaults"), pytest.param(("-f", str(ALL_ON)), id="all-on")]
)
def test_rendered_manifests_pass_a_server_side_dry_run(cluster, helm, values):
    cluster.kubectl("apply", "-f", "-", input=json.dumps(SERVICEMONITOR_CRD))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/servicemonitors.monitoring.coreos.com",
    )
    namespace = f"kt-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    try:
        done = helm("template", "kt", str(CHART), "--namespace", namespace, *values)
        assert done.returncode == 0, done.stderr
        dry = cluster.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "-n",
            namespace,
            "-f",
            "-",
            input=done.stdout,
            check=False,
        )
        assert dry.returncode == 0, dry.stderr
        assert "(server dry run)" in dry.stdout
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")


@pytest.mark.cluster
def test_helm_install_creates_the_operator(cluster, helm):
    namespace = f"kt-{uuid.uuid4().hex[:6]}"
    env_args = ("--kubeconfig", str(cluster.kubeconfig))
    # The test cluster has the CRDs already (not owned by a release).
    done = helm(
        "install",
        "kt",
        str(CHART),
        "--namespace",
        namespace,
        "--create-namespace",
        "--set",
        "crds.enabled=false",
        *env_args,
    )
    assert done.returncode == 0, done.stderr
    try:
        deployment = wait_for(
            "the operator Deployment available",
            lambda: (
                d
                if (d := get(cluster, "deployment", "kt-operator", "-n", namespace))
                and (d.get("status") or {}).get("availableReplicas") == 1
                else None
            ),
        )
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "kt-operator"
        assert get(cluster, "service", "kt-operator", "-n", namespace) is not None
        assert get(cluster, "clusterrole", "kt-operator") is not None
    finally:
        helm("uninstall", "kt", "--namespace", namespace, *env_args)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    assert get(cluster, "clusterrole", "kt-operator") is None
