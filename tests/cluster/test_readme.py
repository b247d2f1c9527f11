"""The README's kubectl commands, run literally in a shell as a user would: from the
repository root, with a kubeconfig whose context is the test's namespace. NAME is the
README's placeholder for a resource name. tests/unit/test_readme.py checks that these
strings are the README's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kubetune.localcluster.controlplane import ControlPlane
from kubetune.localcluster.nodes import build_node
from tests.factories import make_deployment, make_model
from tests.kube import ROOT, OperatorProcess, apply, get, wait_for

pytestmark = pytest.mark.cluster

FIRST_JOB = (
    "kubectl apply -f examples/00-xbox-data.yaml -f examples/01-output-pvc.yaml"
    " -f examples/10-finetunejob-lora.yaml",
    "kubectl get ftj xbox-support",
    "kubectl describe ftj xbox-support",
)
DEPLOYMENTS = "kubectl get ftm NAME -o jsonpath='{.status.deployments}'"
UNFINALIZE = 'kubectl patch ftm NAME --type=merge -p \'{"metadata":{"finalizers":null}}\''

Shell = Callable[[str], subprocess.CompletedProcess[str]]


@pytest.fixture
def shell(cluster: ControlPlane, namespace: str, tmp_path: Path) -> Shell:
    kubeconfig = tmp_path / "kubeconfig"
    shutil.copy(cluster.kubeconfig, kubeconfig)
    cluster.kubectl(
        "config", "set-context", "--current", f"--namespace={namespace}",
        "--kubeconfig", str(kubeconfig),
    )  # fmt: skip
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PATH": f"{cluster.kubectl_path.parent}{os.pathsep}{os.environ['PATH']}",
    }

    def run(command: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{command}: {done.stderr}"
        return done

    return run


@pytest.fixture
def spare_gpu_node(cluster: ControlPlane, namespace: str) -> Iterator[str]:
    """A GPU node of the test's own: the example job must not wait for GPUs that other
    tests' pods (in namespaces still being deleted) hold on the shared nodes."""
    name = f"gpu-{namespace}"
    node = build_node(name, cpu="16", memory="64Gi", gpus=2)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(node))
    cluster.kubectl("wait", "--for=condition=Ready", "--timeout=30s", f"node/{name}")
    yield name
    cluster.kubectl("delete", "node", name, "--wait=false")


def phase(cluster: ControlPlane, namespace: str, kind: str, name: str) -> str | None:
    obj = get(cluster, kind, name, "-n", namespace)
    return (obj or {}).get("status", {}).get("phase")


def test_first_job_with_kubectl(
    cluster: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    output_volume: str,
    shell: Shell,
    spare_gpu_node: str,
) -> None:
    applied, get_job, describe = FIRST_JOB
    assert "finetunejob.kubetune.io/xbox-support created" in shell(applied).stdout
    wait_for(
        "the job Running",
        lambda: phase(cluster, namespace, "ftj", "xbox-support") == "Running",
        60,
    )
    header, row = shell(get_job).stdout.splitlines()
    assert header.split()[:3] == ["NAME", "BACKEND", "PHASE"]
    assert row.split()[:3] == ["xbox-support", "local", "Running"]
    described = shell(describe).stdout
    for part in ("Conditions:", "Accepted", "Training", "Events:"):
        assert part in described


def test_deployments_of_a_model_and_a_finalizer_by_hand(
    cluster: ControlPlane, namespace: str, operator: OperatorProcess, output_pvc: str, shell: Shell
) -> None:
    apply(cluster, make_model("m"), namespace)
    apply(cluster, make_deployment("d", "m"), namespace)
    wait_for(
        "the model in use",
        lambda: phase(cluster, namespace, "ftm", "m") == "InUse",
    )
    assert shell(DEPLOYMENTS.replace("NAME", "m")).stdout == '["d"]'

    # With the operator gone, the model's finalizer holds it until removed by hand.
    operator.stop()
    cluster.kubectl("delete", "ftm", "m", "-n", namespace, "--wait=false")
    assert get(cluster, "ftm", "m", "-n", namespace)["metadata"]["finalizers"]
    shell(UNFINALIZE.replace("NAME", "m"))
    wait_for("the model gone", lambda: get(cluster, "ftm", "m", "-n", namespace) is None)
