"""Every pod the operator makes (training, serving, adapter cleanup) is admitted in a
namespace that enforces the `restricted` Pod Security Standard. The API server's own
PodSecurity admission plugin decides, at pod creation; the test first shows that it is
on and refuses a pod that breaks the standard, so an admitted pod means a compliant one."""

from __future__ import annotations

import json

import pytest

from kubetune.backends.local.manifests import DEPLOYMENT_LABEL, FINETUNEJOB_LABEL
from tests.factories import make_deployment, make_finetunejob, make_model
from tests.kube import apply, get, wait_for

pytestmark = pytest.mark.cluster

ENFORCE = "pod-security.kubernetes.io/enforce"


@pytest.fixture
def restricted(cluster, namespace) -> str:
    """The test namespace, labelled to enforce `restricted` (the conftest fixture does;
    this one makes sure, so the test does not depend on it)."""
    cluster.kubectl("label", "namespace", namespace, f"{ENFORCE}=restricted", "--overwrite")
    assert get(cluster, "namespace", namespace)["metadata"]["labels"][ENFORCE] == "restricted"
    return namespace


def pods(cluster, namespace, selector) -> list[dict]:
    return get(cluster, "pods", "-n", namespace, "-l", selector)["items"]


def pod_security_refusals(cluster, namespace) -> list[str]:
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    return [
        e["message"]
        for e in events["items"]
        if e.get("reason") == "FailedCreate" and "PodSecurity" in e.get("message", "")
    ]


def test_restricted_is_enforced(cluster, restricted):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    done = apply(cluster, pod, restricted)
    assert done.returncode != 0, "a pod breaking `restricted` was admitted: PSS is not enforced"
    assert 'violates PodSecurity "restricted:latest"' in done.stderr
    assert "runAsNonRoot != true" in done.stderr


def test_operator_pods_are_admitted(cluster, restricted, operator, training_data, output_pvc):
    namespace = restricted
    apply(cluster, make_finetunejob("xbox"), namespace)
    (trainer,) = wait_for(
        "the training pod", lambda: pods(cluster, namespace, f"{FINETUNEJOB_LABEL}=xbox")
    )
    spec = trainer["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True

    apply(cluster, make_model("m", deletionPolicy="Delete"), namespace)
    apply(cluster, make_deployment("d", "m"), namespace)
    (server,) = wait_for(
        "the serving pod", lambda: pods(cluster, namespace, f"{DEPLOYMENT_LABEL}=d")
    )
    assert server["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}

    cluster.kubectl("delete", "-n", namespace, "--wait=false", "mdep/d", "ftm/m")
    wait_for("the cleanup pod", lambda: pods(cluster, namespace, "job-name=m-cleanup"))
    assert pod_security_refusals(cluster, namespace) == []
