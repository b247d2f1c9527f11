"""The test control plane itself: simulated GPU nodes, and training-style Jobs whose
pods run, succeed or fail as the test says, with the real Job controller reacting."""

from __future__ import annotations

import json

import pytest

from kubetune.localcluster import controlplane
from kubetune.localcluster.nodes import GPU_PRODUCT_LABEL, GPU_RESOURCE
from tests.kube import KWOK_STAGES, end_pod, get, processes_mentioning, running_pod, wait_for

pytestmark = pytest.mark.cluster


def job(name: str, *, gpus: int = 1, backoff_limit: int = 0) -> dict:
    """A minimal GPU Job that passes the restricted Pod Security Standard."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "tolerations": [
                        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "kubetune/trainer:test",
                            "resources": {"limits": {GPU_RESOURCE: str(gpus)}},
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                }
            },
        },
    }


def create(cluster, namespace, manifest):
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def job_pods(cluster, namespace, name):
    return get(cluster, "pods", "-n", namespace, "-l", f"job-name={name}")["items"]


def job_condition(cluster, namespace, name, type_):
    conditions = (get(cluster, "job", name, "-n", namespace).get("status") or {}).get(
        "conditions", []
    )
    return next((c for c in conditions if c["type"] == type_ and c["status"] == "True"), None)


def test_nodes(cluster):
    nodes = {n["metadata"]["name"]: n for n in get(cluster, "nodes")["items"]}
    gpu = [n for n in nodes.values() if GPU_RESOURCE in n["status"]["capacity"]]
    cpu = [n for n in nodes.values() if GPU_RESOURCE not in n["status"]["capacity"]]
    assert len(gpu) >= 2
    assert len(cpu) >= 1
    for node in gpu:
        assert int(node["status"]["allocatable"][GPU_RESOURCE]) >= 1
        assert node["metadata"]["labels"][GPU_PRODUCT_LABEL]
        assert {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"} in node["spec"][
            "taints"
        ]
    for node in nodes.values():
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True"


def test_job_pod_runs_on_a_gpu_node_and_succeeds(cluster, namespace):
    create(cluster, namespace, job("ok"))
    pod = running_pod(cluster, namespace, "ok")
    assert pod["spec"]["nodeName"].startswith("kwok-gpu-")
    end_pod(cluster, namespace, pod, 0)
    wait_for("Job Complete", lambda: job_condition(cluster, namespace, "ok", "Complete"))


def test_job_pod_fails_with_the_exit_code_the_test_sets(cluster, namespace):
    create(cluster, namespace, job("bad", backoff_limit=1))
    first_pod = running_pod(cluster, namespace, "bad")
    end_pod(cluster, namespace, first_pod, 3, "OOMKilled")
    first = first_pod["metadata"]["name"]
    terminated = wait_for(
        "the pod to fail",
        lambda: (
            get(cluster, "pod", first, "-n", namespace)["status"].get("phase") == "Failed"
            and get(cluster, "pod", first, "-n", namespace)["status"]["containerStatuses"][0][
                "state"
            ]
        ),
    )
    assert terminated["terminated"]["exitCode"] == 3
    assert terminated["terminated"]["reason"] == "OOMKilled"
    # The Job controller retries once (backoffLimit 1) with a new pod, then fails the Job.
    end_pod(cluster, namespace, running_pod(cluster, namespace, "bad", exclude={first}), 1)
    failed = wait_for("Job Failed", lambda: job_condition(cluster, namespace, "bad", "Failed"))
    assert failed["reason"] == "BackoffLimitExceeded"


def test_pod_without_room_stays_pending_with_the_schedulers_reason(cluster, namespace):
    create(cluster, namespace, job("huge", gpus=64))
    pending = wait_for(
        "PodScheduled=False",
        lambda: [
            c
            for p in job_pods(cluster, namespace, "huge")
            for c in p["status"].get("conditions", [])
            if c["type"] == "PodScheduled" and c["status"] == "False"
        ],
    )
    assert pending[0]["reason"] == "Unschedulable"
    assert f"Insufficient {GPU_RESOURCE}" in pending[0]["message"]


def test_restricted_pod_security_is_enforced(cluster, namespace):
    unconfined = job("unconfined")
    unconfined["spec"]["template"]["spec"]["securityContext"] = {}
    unconfined["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {}
    create(cluster, namespace, unconfined)
    events = wait_for(
        "a FailedCreate event",
        lambda: [
            e
            for e in get(cluster, "events", "-n", namespace)["items"]
            if e["reason"] == "FailedCreate"
        ],
    )
    assert "violates PodSecurity" in events[0]["message"]


def test_stop_leaves_no_process_behind(binaries, tmp_path):
    """A second, private control plane: started, then stopped; none of its processes remain."""
    workdir = tmp_path / "private"
    cp = controlplane.start(workdir, binaries, KWOK_STAGES, log=lambda _: None)
    try:
        pids = dict(cp.pids)
        assert set(pids) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        }
        assert all(cp.running().values())
        assert processes_mentioning(str(workdir))
    finally:
        controlplane.stop(cp)
    assert not any(cp.running().values())
    assert processes_mentioning(str(workdir)) == []
