"""The Helm chart's ClusterRole is all the operator needs: an operator that
authenticates as a ServiceAccount bound to exactly that role trains, registers,
serves and deletes without a single forbidden request."""

from __future__ import annotations

import subprocess
import uuid

import pytest
import yaml

from tests.factories import make_deployment, make_finetunejob
from tests.kube import ROOT, OperatorProcess, apply, get, wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def chart_identity(cluster, binaries, tmp_path):
    """A kubeconfig for a ServiceAccount bound to the chart's ClusterRole."""
    release = f"rbac-{uuid.uuid4().hex[:6]}"
    home = f"{release}-system"
    rendered = subprocess.run(
        [
            str(binaries["helm"]),
            "template",
            release,
            str(ROOT / "charts" / "kubetune"),
            "--namespace",
            home,
            "--show-only",
            "templates/rbac.yaml",
            "--show-only",
            "templates/serviceaccount.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cluster.kubectl("create", "namespace", home)
    cluster.kubectl("apply", "-n", home, "-f", "-", input=rendered)
    objects = [o for o in yaml.safe_load_all(rendered) if o]
    (account,) = [o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"]
    token = cluster.kubectl("create", "token", account, "-n", home, "--duration=1h").stdout.strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [{"name": "operator", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "operator"
    path = tmp_path / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    yield path
    cluster.kubectl("delete", "namespace", home, "--wait=false")
    for obj in objects:
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            cluster.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], "--wait=false")


def test_operator_works_with_the_charts_clusterrole_only(
    cluster, namespace, chart_identity, training_data, output_pvc, tmp_path
):
    op = OperatorProcess(cluster, tmp_path / "rbac.log", ("--namespace", namespace), chart_identity)
    op.start()
    try:
        apply(cluster, make_finetunejob("xbox"), namespace)
        pod = wait_for(
            "a running training pod",
            lambda: next(
                (
                    p
                    for p in get(
                        cluster, "pods", "-n", namespace, "-l", "kubetune.io/finetunejob=xbox"
                    )["items"]
                    if p["status"].get("phase") == "Running"
                ),
                None,
            ),
        )
        cluster.kubectl(
            "annotate",
            "pod",
            pod["metadata"]["name"],
            "-n",
            namespace,
            "kwok.kubetune.io/exit-code=0",
        )
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
    log = op.log()
    assert "Forbidden" not in log
    assert "403" not in log
