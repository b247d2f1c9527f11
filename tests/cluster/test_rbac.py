"""The Helm chart's ClusterRole is all the operator needs, and every rule of it is
needed: an operator that authenticates as a ServiceAccount bound to exactly that
role (a real token, so the API server enforces RBAC) trains, reports, registers,
serves and deletes without a single forbidden request; without the rule for Jobs,
for status or for Events it is refused."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.factories import make_deployment, make_finetunejob
from tests.kube import (
    ROOT,
    OperatorProcess,
    apply,
    end_pod,
    get,
    pod_token,
    report,
    running_pod,
    wait_for,
)

pytestmark = pytest.mark.cluster
pytest_plugins = ("tests.azurefake.fixtures",)

Rule = dict


def render_rbac(helm: Path, release: str, namespace: str) -> list[dict]:
    rendered = subprocess.run(
        [
            str(helm),
            "template",
            release,
            str(ROOT / "charts" / "kubetune"),
            "--namespace",
            namespace,
            "--show-only",
            "templates/rbac.yaml",
            "--show-only",
            "templates/serviceaccount.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [o for o in yaml.safe_load_all(rendered) if o]


@pytest.fixture
def chart_identity(cluster, binaries, tmp_path) -> Iterator[Callable[..., Path]]:
    """Makes a kubeconfig for a ServiceAccount bound to the chart's ClusterRole, less the
    rules `drop` selects."""
    created: list[tuple[str, str]] = []

    def make(drop: Callable[[Rule], bool] = lambda _: False) -> Path:
        release = f"rbac-{uuid.uuid4().hex[:6]}"
        home = f"{release}-system"
        objects = render_rbac(binaries["helm"], release, home)
        for obj in objects:
            if obj["kind"] == "ClusterRole":
                obj["rules"] = [r for r in obj["rules"] if not drop(r)]
        cluster.kubectl("create", "namespace", home)
        created.append(("namespace", home))
        for obj in objects:
            cluster.kubectl("apply", "-n", home, "-f", "-", input=yaml.safe_dump(obj))
            if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                created.append((obj["kind"].lower(), obj["metadata"]["name"]))
        (account,) = [o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"]
        token = cluster.kubectl("create", "token", account, "-n", home, "--duration=1h").stdout
        config = yaml.safe_load(cluster.kubeconfig.read_text())
        config["users"] = [{"name": "operator", "user": {"token": token.strip()}}]
        config["contexts"][0]["context"]["user"] = "operator"
        path = tmp_path / f"{release}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return path

    yield make
    for kind, name in created:
        cluster.kubectl("delete", kind, name, "--wait=false", check=False)


def test_operator_works_with_the_charts_clusterrole_only(
    cluster, namespace, chart_identity, training_data, output_pvc, tmp_path
):
    op = OperatorProcess(
        cluster, tmp_path / "rbac.log", ("--namespace", namespace), chart_identity()
    )
    op.start()
    try:
        apply(cluster, make_finetunejob("xbox"), namespace)
        pod = running_pod(cluster, namespace, "xbox")
        token = pod_token(cluster, namespace, pod)
        assert report(op.port, namespace, "xbox", token, {"progress": {"step": 1}})[0] == 200
        end_pod(cluster, namespace, pod, 0)
        wait_for(
            "the model",
            lambda: (
                (get(cluster, "ftm", "xbox", "-n", namespace) or {}).get("status", {}).get("phase")
                == "Ready"
            ),
        )
        apply(cluster, make_deployment("d", "xbox"), namespace)
        wait_for(
            "the deployment Ready",
            lambda: (
                (get(cluster, "mdep", "d", "-n", namespace) or {}).get("status", {}).get("phase")
                == "Ready"
            ),
        )
        cluster.kubectl("delete", "-n", namespace, "--wait=false", "ftm/xbox", "mdep/d")
        wait_for("the model deleted", lambda: get(cluster, "ftm", "xbox", "-n", namespace) is None)
    finally:
        op.stop()
    # Without the lines' timestamps, whose milliseconds can read 403.
    log = re.sub(r"^\[[0-9-]+ [0-9:]+,[0-9]+\]", "", op.log(), flags=re.MULTILINE)
    assert "Forbidden" not in log
    assert "403" not in log


@pytest.mark.parametrize(
    "drop",
    [
        pytest.param(lambda r: r["resources"] == ["jobs"], id="jobs"),
        pytest.param(lambda r: any(x.endswith("/status") for x in r["resources"]), id="status"),
        pytest.param(lambda r: r["resources"] == ["events"], id="events"),
        pytest.param(lambda r: r["resources"] == ["configmaps"], id="configmaps"),
    ],
)
def test_each_rule_is_needed(
    cluster, namespace, chart_identity, training_data, output_pvc, tmp_path, drop
):
    op = OperatorProcess(
        cluster, tmp_path / "rbac.log", ("--namespace", namespace), chart_identity(drop)
    )
    op.start()
    try:
        apply(cluster, make_finetunejob("xbox"), namespace)
        deadline = time.monotonic() + 30
        while "Forbidden" not in op.log() and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        op.stop()
    assert "Forbidden" in op.log()


def foundry_manifests(fake) -> list[dict]:
    ws = fake.state.workspace
    job = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "xbox"},
        "spec": {
            "backend": "foundry",
            "baseModel": "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/7",
            "dataset": {
                "training": {"configMap": {"name": "xbox-support-data", "key": "train.jsonl"}}
            },
            "workspace": {
                "subscriptionId": ws.subscription_id,
                "resourceGroup": ws.resource_group,
                "name": ws.name,
                "credentials": {"secretRef": {"name": "azure-sp"}},
            },
        },
    }
    deployment = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "d"},
        "spec": {"modelRef": {"name": "xbox"}, "backend": "foundry"},
    }
    return [job, deployment]


@pytest.mark.parametrize("drop_secrets", [False, True], ids=["full-role", "without-secrets"])
def test_foundry_works_with_the_charts_clusterrole_and_needs_secrets(
    cluster, namespace, chart_identity, training_data, azure_fake, tmp_path, drop_secrets
):
    """A service principal's Secret is read and the endpoint key is written to a Secret."""
    azure_fake.state.client_secrets["sp-client"] = "sp-secret"
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "azure-sp",
        "-n",
        namespace,
        "--from-literal=AZURE_TENANT_ID=tenant",
        "--from-literal=AZURE_CLIENT_ID=sp-client",
        "--from-literal=AZURE_CLIENT_SECRET=sp-secret",
    )
    drop = (lambda r: r["resources"] == ["secrets"]) if drop_secrets else (lambda _: False)
    op = OperatorProcess(
        cluster,
        tmp_path / "rbac.log",
        ("--namespace", namespace, "--foundry-poll-interval=0.3", "--foundry-max-poll-interval=1"),
        chart_identity(drop),
    )
    op.start()
    try:
        for manifest in foundry_manifests(azure_fake):
            assert apply(cluster, manifest, namespace).returncode == 0
        if drop_secrets:
            wait_for("a Forbidden secret read", lambda: "Forbidden" in op.log())
            assert not azure_fake.calls("job.put")
            return
        wait_for(
            "the endpoint Ready",
            lambda: (
                (get(cluster, "mdep", "d", "-n", namespace) or {}).get("status", {}).get("phase")
                == "Ready"
            ),
            90,
        )
        cluster.kubectl("delete", "-n", namespace, "--wait=false", "ftm/xbox", "mdep/d")
        wait_for("the model deleted", lambda: get(cluster, "ftm", "xbox", "-n", namespace) is None)
    finally:
        op.stop()
    assert "Forbidden" not in op.log()
