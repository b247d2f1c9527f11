"""FineTuneJob with backend local, against the real control plane with kwok GPU nodes
and the operator as its own process."""

from __future__ import annotations

import json
import signal
import urllib.request

import pytest

from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.trainerconfig import TrainerConfig
from kubetune.backends.local.manifests import (
    CONFIG_ANNOTATION,
    FINETUNEJOB_LABEL,
    build_training_job,
)
from kubetune.datavalidation import BAD_INPUT_EXIT_CODE
from kubetune.localcluster.nodes import GPU_PRODUCT, GPU_PRODUCT_LABEL, GPU_RESOURCE, build_node
from kubetune.settings import LocalSettings
from tests.factories import make_finetunejob
from tests.kube import apply, end_pod, get, pod_token, report, running_pod, wait_for

pytestmark = pytest.mark.cluster


def ftj_status(cluster, namespace, name="xbox") -> dict:
    obj = get(cluster, "ftj", name, "-n", namespace)
    return (obj or {}).get("status") or {}


def wait_phase(cluster, namespace, phase, name="xbox", timeout=30) -> dict:
    return wait_for(
        f"{name} {phase}",
        lambda: (s := ftj_status(cluster, namespace, name)).get("phase") == phase and s,
        timeout,
    )


def condition(status: dict, type_: str) -> dict:
    return next(c for c in status.get("conditions", []) if c["type"] == type_)


def pods_of(cluster, namespace, name="xbox") -> list[dict]:
    return get(cluster, "pods", "-n", namespace, "-l", f"{FINETUNEJOB_LABEL}={name}")["items"]


def events_for(cluster, namespace, name) -> list[dict]:
    return [
        e
        for e in get(cluster, "events", "-n", namespace)["items"]
        if e["involvedObject"]["name"] == name
    ]


@pytest.fixture
def priority_class(cluster) -> str:
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": "kubetune-test-training"},
                "value": 1000,
            }
        ),
    )
    return "kubetune-test-training"


def test_job_runs_to_succeeded_with_progress_and_a_model(
    cluster, namespace, operator, training_data, output_pvc, priority_class
):
    ftj = make_finetunejob(
        "xbox",
        resources={"gpus": 1, "memory": "32Gi"},
        nodeSelector={GPU_PRODUCT_LABEL: GPU_PRODUCT},
        tolerations=[{"key": "example.com/spot", "operator": "Exists", "effect": "NoSchedule"}],
        priorityClassName=priority_class,
        activeDeadlineSeconds=7200,
    )
    assert apply(cluster, ftj, namespace).returncode == 0
    job = wait_for("the training Job", lambda: get(cluster, "job", "xbox", "-n", namespace))
    uid = get(cluster, "ftj", "xbox", "-n", namespace)["metadata"]["uid"]

    # One Job, owned by the FineTuneJob, labelled.
    (owner,) = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("FineTuneJob", uid, True)
    labels = job["metadata"]["labels"]
    assert labels[FINETUNEJOB_LABEL] == "xbox"
    assert labels["app.kubernetes.io/managed-by"] == "kubetune"
    assert labels["app.kubernetes.io/instance"] == "xbox"
    spec = job["spec"]
    assert spec["activeDeadlineSeconds"] == 7200
    assert spec["backoffLimit"] == 3
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob"
    assert rules[0]["onExitCodes"]["values"] == [BAD_INPUT_EXIT_CODE, 78]
    assert rules[1] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    pod_spec = spec["template"]["spec"]
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["priorityClassName"] == priority_class
    assert pod_spec["nodeSelector"] == {GPU_PRODUCT_LABEL: GPU_PRODUCT}
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod_spec[
        "tolerations"
    ]
    assert {"key": "example.com/spot", "operator": "Exists", "effect": "NoSchedule"} in pod_spec[
        "tolerations"
    ]
    (container,) = pod_spec["containers"]
    assert container["resources"]["limits"] == {GPU_RESOURCE: "1", "memory": "32Gi"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert "--nproc-per-node=1" in container["command"]
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert volumes["training"]["configMap"]["name"] == training_data
    assert volumes["output"]["persistentVolumeClaim"]["claimName"] == output_pvc
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert (
        volumes["progress-token"]["projected"]["sources"][0]["serviceAccountToken"]["audience"]
        == "kubetune"
    )
    config = TrainerConfig.model_validate_json(
        spec["template"]["metadata"]["annotations"][CONFIG_ANNOTATION]
    )
    assert config.training_path == "/data/training/train.jsonl"
    assert config.output_dir == "/output/adapters/xbox"
    assert config.spec.lora.r == 16

    # Running on a GPU node; progress through the real channel.
    status = wait_phase(cluster, namespace, "Running")
    assert status["startTime"]
    pod = running_pod(cluster, namespace, "xbox")
    assert pod["spec"]["nodeName"].startswith("kwok-gpu-")
    token = pod_token(cluster, namespace, pod)
    code, _ = report(
        operator.port,
        namespace,
        "xbox",
        token,
        {"progress": {"epoch": 1.5, "step": 30, "totalSteps": 60, "trainLoss": 1.25}},
    )
    assert code == 200
    progress = wait_for("progress", lambda: ftj_status(cluster, namespace).get("progress"))
    assert progress == {
        "epoch": 1.5,
        "step": 30,
        "totalSteps": 60,
        "percent": 50,
        "trainLoss": 1.25,
    }
    metrics = {"trainLoss": 0.9, "validationLoss": 1.1, "perplexity": 3.0, "tokenAccuracy": 0.71}
    assert report(operator.port, namespace, "xbox", token, {"metrics": metrics})[0] == 200
    wait_for("metrics", lambda: ftj_status(cluster, namespace).get("metrics") == metrics)

    end_pod(cluster, namespace, pod, 0)
    status = wait_phase(cluster, namespace, "Succeeded")
    assert status["completionTime"] >= status["startTime"]
    assert status["progress"]["percent"] == 100
    assert condition(status, "Succeeded")["status"] == "True"
    assert condition(status, "Running")["status"] == "False"
    status = wait_for(
        "the model's name", lambda: (s := ftj_status(cluster, namespace)).get("model") and s
    )
    assert status["model"] == "xbox"
    model = get(cluster, "ftm", "xbox", "-n", namespace)
    assert model["spec"]["source"] == {"pvc": {"claimName": output_pvc, "path": "adapters/xbox"}}
    assert model["spec"]["sourceJob"] == "xbox"
    assert "ownerReferences" not in model["metadata"]
    # An Event per transition after acceptance, saying what the operator did.
    events = {
        e["reason"]: e["message"]
        for e in events_for(cluster, namespace, "xbox")
        if e["involvedObject"]["kind"] == "FineTuneJob"
    }
    assert events == {
        "Training": f"Training in pod {pod['metadata']['name']} on node {pod['spec']['nodeName']}.",
        "Completed": "Training finished. Registered FineTunedModel xbox.",
    }

    # Deleting the job's record keeps the model.
    cluster.kubectl("delete", "ftj", "xbox", "-n", namespace)
    wait_for(
        "the Job garbage-collected", lambda: get(cluster, "job", "xbox", "-n", namespace) is None
    )
    assert get(cluster, "ftm", "xbox", "-n", namespace) is not None


def test_reports_are_authenticated_per_job(cluster, namespace, operator, training_data, output_pvc):
    for name in ("a", "b"):
        apply(cluster, make_finetunejob(name), namespace)
    pod_a = running_pod(cluster, namespace, "a")
    pod_b = running_pod(cluster, namespace, "b")
    body = {"progress": {"step": 1, "totalSteps": 10}}
    assert report(operator.port, namespace, "a", None, body)[0] == 401
    assert report(operator.port, namespace, "a", "not-a-token", body)[0] == 401
    wrong_audience = pod_token(cluster, namespace, pod_a, audience="https://kubernetes.default.svc")
    assert report(operator.port, namespace, "a", wrong_audience, body)[0] == 401
    code, message = report(
        operator.port, namespace, "a", pod_token(cluster, namespace, pod_b), body
    )
    assert (code, message) == (403, "a pod of FineTuneJob b cannot report for a")
    token_a = pod_token(cluster, namespace, pod_a)
    assert report(operator.port, "default", "a", token_a, body)[0] == 403
    assert report(operator.port, namespace, "a", token_a, {"progress": {"step": "x"}})[0] == 400
    assert report(operator.port, namespace, "a", token_a, body)[0] == 200
    assert "progress" not in ftj_status(cluster, namespace, "b")


def test_several_gpus_run_data_parallel(cluster, namespace, operator, training_data, output_pvc):
    apply(cluster, make_finetunejob("big", resources={"gpus": 4}), namespace)
    job = wait_for("the Job", lambda: get(cluster, "job", "big", "-n", namespace))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert "--nproc-per-node=4" in container["command"]
    assert container["resources"]["limits"][GPU_RESOURCE] == "4"
    config = TrainerConfig.model_validate_json(
        job["spec"]["template"]["metadata"]["annotations"][CONFIG_ANNOTATION]
    )
    assert config.processes == 4


@pytest.fixture
def small_gpu_node(cluster, namespace):
    """A node of our own with 2 GPUs, so that GPU demand can exceed supply."""
    name = f"kwok-small-{namespace}"
    node = build_node(
        name, cpu="16", memory="64Gi", gpus=2, labels={"kubetune.io/test-pool": namespace}
    )
    cluster.kubectl("apply", "-f", "-", input=json.dumps(node))
    cluster.kubectl("wait", "--for=condition=Ready", "--timeout=30s", f"node/{name}")
    yield {"kubetune.io/test-pool": namespace}
    cluster.kubectl("delete", "node", name, "--wait=false")


def test_more_demand_than_gpus_queues_with_the_schedulers_reason(
    cluster, namespace, operator, training_data, output_pvc, small_gpu_node
):
    names = ["q1", "q2", "q3"]
    for name in names:
        apply(cluster, make_finetunejob(name, nodeSelector=small_gpu_node), namespace)
    phases = wait_for(
        "two Running and one Queued",
        lambda: (
            (p := sorted(ftj_status(cluster, namespace, n).get("phase") or "" for n in names))
            == ["Queued", "Running", "Running"]
            and p
        ),
    )
    assert phases
    queued = next(n for n in names if ftj_status(cluster, namespace, n)["phase"] == "Queued")
    message = condition(ftj_status(cluster, namespace, queued), "Queued")["message"]
    assert f"Insufficient {GPU_RESOURCE}" in message
    first = next(n for n in names if n != queued)
    end_pod(cluster, namespace, running_pod(cluster, namespace, first), 0)
    wait_phase(cluster, namespace, "Succeeded", first)
    wait_phase(cluster, namespace, "Running", queued, timeout=60)
    assert condition(ftj_status(cluster, namespace, queued), "Queued")["status"] == "False"


def test_bad_input_fails_without_retry(cluster, namespace, operator, training_data, output_pvc):
    apply(cluster, make_finetunejob("bad"), namespace)
    pod = running_pod(cluster, namespace, "bad")
    end_pod(cluster, namespace, pod, BAD_INPUT_EXIT_CODE, "InvalidTrainingData")
    status = wait_phase(cluster, namespace, "Failed", "bad")
    failed = condition(status, "Failed")
    assert failed["reason"] == "InvalidInput"
    assert f"exited with code {BAD_INPUT_EXIT_CODE} (InvalidTrainingData)" in failed["message"]
    assert len(pods_of(cluster, namespace, "bad")) == 1
    warning = [e for e in events_for(cluster, namespace, "bad") if e["reason"] == "InvalidInput"]
    assert warning[0]["type"] == "Warning"


def test_infrastructure_failures_are_retried_then_fail(
    cluster, namespace, operator, training_data, output_pvc
):
    apply(cluster, make_finetunejob("flaky", backoffLimit=1), namespace)
    first = running_pod(cluster, namespace, "flaky")
    end_pod(cluster, namespace, first, 137, "OOMKilled")
    second = running_pod(cluster, namespace, "flaky", exclude={first["metadata"]["name"]})
    running = wait_phase(cluster, namespace, "Running", "flaky")
    assert "OOMKilled" in condition(running, "Running")["message"]
    end_pod(cluster, namespace, second, 137, "OOMKilled")
    status = wait_phase(cluster, namespace, "Failed", "flaky")
    failed = condition(status, "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "OOMKilled" in failed["message"]


def test_deadline_fails_with_deadline_exceeded(
    cluster, namespace, operator, training_data, output_pvc
):
    apply(cluster, make_finetunejob("slow", activeDeadlineSeconds=3), namespace)
    status = wait_phase(cluster, namespace, "Failed", "slow", timeout=60)
    assert condition(status, "Failed")["reason"] == "DeadlineExceeded"


def test_suspend_and_resume(cluster, namespace, operator, training_data, output_pvc):
    apply(cluster, make_finetunejob("paused", suspend=True), namespace)
    wait_phase(cluster, namespace, "Suspended", "paused")
    assert get(cluster, "job", "paused", "-n", namespace)["spec"]["suspend"] is True
    assert pods_of(cluster, namespace, "paused") == []
    cluster.kubectl(
        "patch",
        "ftj",
        "paused",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"suspend":false}}',
    )
    wait_phase(cluster, namespace, "Running", "paused")
    cluster.kubectl(
        "patch", "ftj", "paused", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    wait_phase(cluster, namespace, "Suspended", "paused")
    wait_for(
        "the pod removed",
        lambda: (
            not [
                p
                for p in pods_of(cluster, namespace, "paused")
                if not p["metadata"].get("deletionTimestamp")
            ]
        ),
    )


def test_kueue_queue_label_passes_through_and_keeps_the_job_suspended(
    cluster, namespace, operator, training_data, output_pvc
):
    ftj = make_finetunejob("queued", labels={"kueue.x-k8s.io/queue-name": "gpu-queue"})
    apply(cluster, ftj, namespace)
    job = wait_for("the Job", lambda: get(cluster, "job", "queued", "-n", namespace))
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert job["spec"]["template"]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert job["spec"]["suspend"] is True
    wait_phase(cluster, namespace, "Suspended", "queued")
    # Kueue admits the workload by unsuspending the Job; the operator follows.
    cluster.kubectl(
        "patch",
        "job",
        "queued",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"suspend":false}}',
    )
    wait_phase(cluster, namespace, "Running", "queued")


def test_job_without_an_output_fails_with_the_reason(cluster, namespace, operator, training_data):
    ftj = make_finetunejob("nowhere")
    del ftj["spec"]["output"]
    apply(cluster, ftj, namespace)
    status = wait_phase(cluster, namespace, "Failed", "nowhere")
    assert "spec.output is required" in condition(status, "Failed")["message"]
    assert get(cluster, "job", "nowhere", "-n", namespace) is None


def test_job_the_api_server_refuses_fails_with_its_reason(
    cluster, namespace, operator, training_data, output_pvc
):
    apply(
        cluster, make_finetunejob("refused", nodeSelector={"pool": "not a label value!"}), namespace
    )
    status = wait_phase(cluster, namespace, "Failed", "refused")
    failed = condition(status, "Failed")
    assert failed["reason"] == "JobRejected"
    assert "Invalid value" in failed["message"]


def test_restart_after_job_created_before_status_written(
    cluster, namespace, operator, training_data, output_pvc
):
    """The state a crash between creating the Job and writing status leaves behind."""

    operator.stop()
    apply(cluster, make_finetunejob("crash"), namespace)
    ftj = get(cluster, "ftj", "crash", "-n", namespace)
    assert "status" not in ftj
    manifest = build_training_job(
        name="crash",
        namespace=namespace,
        uid=ftj["metadata"]["uid"],
        labels={},
        spec=FineTuneJobSpec.model_validate(ftj["spec"]),
        settings=LocalSettings(),
    )
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    operator.start()
    pod = running_pod(cluster, namespace, "crash")
    wait_phase(cluster, namespace, "Running", "crash")
    assert len(get(cluster, "jobs", "-n", namespace)["items"]) == 1
    end_pod(cluster, namespace, pod, 0)
    wait_phase(cluster, namespace, "Succeeded", "crash")
    assert len(get(cluster, "jobs", "-n", namespace)["items"]) == 1


def test_kill_9_right_after_the_job_appears(
    cluster, namespace, operator, training_data, output_pvc
):
    apply(cluster, make_finetunejob("killed"), namespace)
    wait_for("the Job", lambda: get(cluster, "job", "killed", "-n", namespace), timeout=30)
    operator.stop(signal.SIGKILL)
    operator.start()
    pod = running_pod(cluster, namespace, "killed")
    end_pod(cluster, namespace, pod, 0)
    wait_phase(cluster, namespace, "Succeeded", "killed")
    assert [j["metadata"]["name"] for j in get(cluster, "jobs", "-n", namespace)["items"]] == [
        "killed"
    ]
    wait_for("the model", lambda: get(cluster, "ftm", "killed", "-n", namespace))


def test_metrics_follow_the_jobs(cluster, namespace, operator, training_data, output_pvc):
    def metrics() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{operator.port}/metrics") as r:
            return r.read().decode()

    apply(cluster, make_finetunejob("m"), namespace)
    wait_for(
        "Running counted",
        lambda: 'kubetune_finetunejobs{backend="local",phase="Running"} 1.0' in metrics(),
    )
    end_pod(cluster, namespace, running_pod(cluster, namespace, "m"), 0)
    wait_for(
        "Succeeded counted",
        lambda: 'kubetune_finetunejobs{backend="local",phase="Succeeded"} 1.0' in metrics(),
    )
    text = metrics()
    assert 'kubetune_finetunejobs{backend="local",phase="Running"} 0.0' in text
    assert (
        'kubetune_reconcile_duration_seconds_count{handler="training",kind="FineTuneJob"}' in text
    )
    ftj = make_finetunejob("broken")
    del ftj["spec"]["output"]
    apply(cluster, ftj, namespace)
    wait_phase(cluster, namespace, "Failed", "broken")
    text = metrics()
    assert 'kubetune_finetunejobs{backend="local",phase="Failed"} 1.0' in text
    assert 'kubetune_spec_failures_total{kind="FineTuneJob",reason="InvalidSpec"} 1.0' in text
    assert report(operator.port, namespace, "m", None, {})[0] == 401
    assert 'kubetune_trainer_reports_total{status="401"} 1.0' in metrics()


def test_a_foreign_job_with_the_same_name_fails_the_finetunejob(
    cluster, namespace, operator, training_data, output_pvc
):
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "xbox"},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
                }
            },
        },
    }
    assert apply(cluster, foreign, namespace).returncode == 0
    apply(cluster, make_finetunejob("xbox"), namespace)
    failed = wait_phase(cluster, namespace, "Failed")
    (cond,) = [c for c in failed["conditions"] if c["type"] == "Failed"]
    assert cond["reason"] == "JobNameTaken"
    assert "exists and is not this job's" in cond["message"]
