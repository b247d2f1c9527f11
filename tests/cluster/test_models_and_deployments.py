"""FineTunedModel and ModelDeployment with backend local: serving, and the rule that a
model cannot be deleted while a deployment of it exists, in every deletion order."""

from __future__ import annotations

import json
import signal
import uuid

import pytest

from kubetune.api.finetunedmodel import FineTunedModelSpec
from kubetune.api.modeldeployment import ModelDeploymentSpec
from kubetune.backends.local.manifests import (
    DEPLOYMENT_LABEL,
    MODEL_LABEL,
    build_serving_deployment,
    build_serving_service,
)
from kubetune.localcluster.storage import build_static_pv
from kubetune.settings import LocalSettings
from tests.factories import OUTPUT_CLAIM, make_deployment, make_finetunejob, make_model
from tests.kube import apply, end_pod, get, running_pod, wait_for

pytestmark = pytest.mark.cluster


def phase(cluster, kind, name, namespace):
    obj = get(cluster, kind, name, "-n", namespace)
    return obj and (obj.get("status") or {}).get("phase")


def wait_phase(cluster, kind, name, namespace, want, timeout=30):
    wait_for(
        f"{kind}/{name} {want}", lambda: phase(cluster, kind, name, namespace) == want, timeout
    )
    return get(cluster, kind, name, "-n", namespace)["status"]


def gone(cluster, kind, name, namespace, timeout=15):
    wait_for(
        f"{kind}/{name} gone", lambda: get(cluster, kind, name, "-n", namespace) is None, timeout
    )


def delete(cluster, namespace, *refs):
    cluster.kubectl("delete", "-n", namespace, "--wait=false", *refs)


@pytest.fixture
def served(cluster, namespace, operator, output_pvc):
    """A Ready model and a Ready deployment of it."""
    apply(cluster, make_model("m"), namespace)
    wait_phase(cluster, "ftm", "m", namespace, "Ready")
    apply(cluster, make_deployment("d", "m"), namespace)
    wait_phase(cluster, "mdep", "d", namespace, "Ready")
    wait_phase(cluster, "ftm", "m", namespace, "InUse")
    return "m", "d"


def test_deployment_serves_once_the_model_is_ready(cluster, namespace, operator, output_pvc):
    apply(cluster, make_deployment("d", "m"), namespace)
    status = wait_phase(cluster, "mdep", "d", namespace, "WaitingForModel")
    (cond,) = [c for c in status["conditions"] if c["type"] == "ModelReady"]
    assert cond["message"] == "FineTunedModel m does not exist"
    assert get(cluster, "deployment", "d", "-n", namespace) is None

    apply(cluster, make_model("m"), namespace)
    status = wait_phase(cluster, "mdep", "d", namespace, "Ready")
    assert status["endpoint"] == f"http://d.{namespace}.svc:8000/v1"
    assert status["readyReplicas"] == 1
    deployment = get(cluster, "deployment", "d", "-n", namespace)
    (owner,) = deployment["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("ModelDeployment", "d")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["python", "-m", "kubetune.serve"]
    assert "--adapter=/models/adapters/adapters/m" in container["command"]
    service = get(cluster, "service", "d", "-n", namespace)
    assert service["spec"]["selector"] == {DEPLOYMENT_LABEL: "d"}
    pods = get(cluster, "pods", "-n", namespace, "-l", f"{DEPLOYMENT_LABEL}=d")["items"]
    assert pods
    assert all(p["metadata"]["labels"][DEPLOYMENT_LABEL] == "d" for p in pods)
    slices = wait_for(
        "ready endpoints behind the Service",
        lambda: [
            e
            for s in get(
                cluster, "endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=d"
            )["items"]
            for e in s.get("endpoints") or []
            if e["conditions"].get("ready")
        ],
    )
    assert {e["targetRef"]["name"] for e in slices} == {p["metadata"]["name"] for p in pods}
    model = get(cluster, "ftm", "m", "-n", namespace)["status"]
    assert model["deployments"] == ["d"]
    assert model["phase"] == "InUse"


def test_deployment_reports_a_rollout_that_cannot_progress(
    cluster, namespace, operator, output_pvc
):
    apply(cluster, make_model("m"), namespace)
    apply(cluster, make_deployment("d", "m"), namespace)
    wait_phase(cluster, "mdep", "d", namespace, "Ready")
    # What the Deployment controller reports when pods cannot start in time.
    cluster.kubectl(
        "patch",
        "deployment",
        "d",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"progressDeadlineSeconds": 1, "template": {"spec":'
        ' {"nodeSelector": {"kubetune.io/no-such-node": "x"}}}}}',
    )
    status = wait_phase(cluster, "mdep", "d", namespace, "Failed", timeout=60)
    (available,) = [c for c in status["conditions"] if c["type"] == "Available"]
    assert available["reason"] == "ProgressDeadlineExceeded"


def test_model_deleted_first_is_blocked_until_the_deployment_goes(cluster, namespace, served):
    model, deployment = served
    delete(cluster, namespace, f"ftm/{model}")
    status = wait_phase(cluster, "ftm", model, namespace, "DeletionBlocked")
    (blocked,) = [c for c in status["conditions"] if c["type"] == "DeletionBlocked"]
    assert blocked["status"] == "True"
    assert blocked["message"].startswith(f"delete ModelDeployment {deployment} first")
    warning = wait_for(
        "a Warning event",
        lambda: [
            e
            for e in get(cluster, "events", "-n", namespace)["items"]
            if e["involvedObject"]["name"] == model and e["reason"] == "DeletionBlocked"
        ],
    )
    assert warning[0]["type"] == "Warning"
    assert f"delete ModelDeployment {deployment} first" in warning[0]["message"]
    assert get(cluster, "ftm", model, "-n", namespace) is not None

    delete(cluster, namespace, f"mdep/{deployment}")
    gone(cluster, "ftm", model, namespace)


def test_deployment_deleted_first_then_model(cluster, namespace, served):
    model, deployment = served
    delete(cluster, namespace, f"mdep/{deployment}")
    gone(cluster, "mdep", deployment, namespace)
    wait_phase(cluster, "ftm", model, namespace, "Ready")
    delete(cluster, namespace, f"ftm/{model}")
    gone(cluster, "ftm", model, namespace)


def test_both_deleted_at_once_converge(cluster, namespace, served):
    model, deployment = served
    delete(cluster, namespace, f"ftm/{model}", f"mdep/{deployment}")
    gone(cluster, "ftm", model, namespace)
    gone(cluster, "mdep", deployment, namespace)


def test_force_delete_annotation_releases_a_blocked_model(cluster, namespace, served):
    model, deployment = served
    delete(cluster, namespace, f"ftm/{model}")
    wait_phase(cluster, "ftm", model, namespace, "DeletionBlocked")
    cluster.kubectl("annotate", "ftm", model, "-n", namespace, "kubetune.io/force-delete=true")
    gone(cluster, "ftm", model, namespace)
    forced = [
        e for e in get(cluster, "events", "-n", namespace)["items"] if e["reason"] == "ForceDeleted"
    ]
    assert forced
    assert forced[0]["type"] == "Warning"
    assert get(cluster, "mdep", deployment, "-n", namespace) is not None


def test_namespace_deletion_does_not_hang(cluster, operator, output_pvc, namespace):
    # `served` lives in the fixture namespace; this test deletes a namespace of its own.
    other = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", other)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(build_static_pv(other, OUTPUT_CLAIM)))
    op = type(operator)(cluster, operator.log_path.with_name("other.log"), ("--namespace", other))
    op.start()
    try:
        apply(cluster, make_model("m"), other)
        wait_phase(cluster, "ftm", "m", other, "Ready")
        apply(cluster, make_deployment("d", "m"), other)
        wait_phase(cluster, "ftm", "m", other, "InUse")
        cluster.kubectl("delete", "namespace", other, "--wait=false")
        wait_for("the namespace gone", lambda: get(cluster, "namespace", other) is None, timeout=60)
    finally:
        op.stop()


def test_deletion_policy_delete_removes_the_adapter_first(cluster, namespace, operator, output_pvc):
    apply(cluster, make_model("m", deletionPolicy="Delete"), namespace)
    wait_phase(cluster, "ftm", "m", namespace, "Ready")
    delete(cluster, namespace, "ftm/m")
    job = wait_for("the cleanup Job", lambda: get(cluster, "job", "m-cleanup", "-n", namespace))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["rm", "-rf", "--", "/models/adapters/m"]
    assert job["metadata"]["labels"][MODEL_LABEL] == "m"
    wait_phase(cluster, "ftm", "m", namespace, "Deleting")
    pod = running_pod(cluster, namespace, "m-cleanup")
    assert get(cluster, "ftm", "m", "-n", namespace) is not None
    end_pod(cluster, namespace, pod, 0)
    gone(cluster, "ftm", "m", namespace)


@pytest.mark.parametrize("end", ["succeeds", "is-deleted"])
def test_model_a_job_trains_from_is_deleted_once_the_job_ends(
    cluster, namespace, operator, output_pvc, training_data, end
):
    """Its adapter is the job's starting point: the cleanup must not pull it away."""
    apply(cluster, make_model("m", deletionPolicy="Delete"), namespace)
    wait_phase(cluster, "ftm", "m", namespace, "Ready")
    apply(cluster, make_finetunejob("more", baseModel="model://m"), namespace)
    pod = running_pod(cluster, namespace, "more")
    delete(cluster, namespace, "ftm/m")
    status = wait_phase(cluster, "ftm", "m", namespace, "DeletionBlocked")
    (blocked,) = [c for c in status["conditions"] if c["type"] == "DeletionBlocked"]
    assert (blocked["status"], blocked["reason"]) == ("True", "TrainingJobsExist")
    assert blocked["message"].startswith("FineTuneJob more continues training from it")
    assert get(cluster, "job", "m-cleanup", "-n", namespace) is None

    if end == "succeeds":
        end_pod(cluster, namespace, pod, 0)
    else:
        delete(cluster, namespace, "ftj/more")
    cleanup = running_pod(cluster, namespace, "m-cleanup")
    assert phase(cluster, "ftm", "m", namespace) == "Deleting"
    if end == "succeeds":
        assert phase(cluster, "ftj", "more", namespace) == "Succeeded"
    end_pod(cluster, namespace, cleanup, 0)
    gone(cluster, "ftm", "m", namespace)


def test_a_held_up_deletion_goes_on_after_a_restart_in_which_the_job_ended(
    cluster, namespace, operator, output_pvc, training_data
):
    """The restarted operator knows the jobs that continue from a model before it looks
    at any model, and the job's end, found after the restart, lets the deletion go on."""
    apply(cluster, make_model("m"), namespace)
    wait_phase(cluster, "ftm", "m", namespace, "Ready")
    apply(cluster, make_finetunejob("more", baseModel="model://m"), namespace)
    pod = running_pod(cluster, namespace, "more")
    delete(cluster, namespace, "ftm/m")
    wait_phase(cluster, "ftm", "m", namespace, "DeletionBlocked")
    operator.stop(signal.SIGKILL)
    end_pod(cluster, namespace, pod, 0)
    wait_for(
        "the training Job complete",
        lambda: any(
            c["type"] == "Complete" and c["status"] == "True"
            for c in get(cluster, "job", "more", "-n", namespace)["status"].get("conditions", [])
        ),
    )
    assert phase(cluster, "ftm", "m", namespace) == "DeletionBlocked"
    operator.start()
    gone(cluster, "ftm", "m", namespace, timeout=30)
    assert phase(cluster, "ftj", "more", namespace) == "Succeeded"


def test_retain_policy_deletes_without_cleanup(cluster, namespace, operator, output_pvc):
    apply(cluster, make_model("m"), namespace)
    wait_phase(cluster, "ftm", "m", namespace, "Ready")
    delete(cluster, namespace, "ftm/m")
    gone(cluster, "ftm", "m", namespace)
    assert get(cluster, "job", "m-cleanup", "-n", namespace) is None


def test_restart_after_deployment_created_before_status_written(
    cluster, namespace, operator, output_pvc
):
    apply(cluster, make_model("m"), namespace)
    wait_phase(cluster, "ftm", "m", namespace, "Ready")
    operator.stop()
    apply(cluster, make_deployment("d", "m"), namespace)
    mdep = get(cluster, "mdep", "d", "-n", namespace)
    model = get(cluster, "ftm", "m", "-n", namespace)
    manifest = build_serving_deployment(
        name="d",
        namespace=namespace,
        uid=mdep["metadata"]["uid"],
        spec=ModelDeploymentSpec.model_validate(mdep["spec"]),
        model_name="m",
        model=FineTunedModelSpec.model_validate(model["spec"]),
        settings=LocalSettings(),
    )
    service = build_serving_service(name="d", namespace=namespace, uid=mdep["metadata"]["uid"])
    for obj in (service, manifest):  # what the operator creates, in its order
        cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(obj))
    operator.start()
    wait_phase(cluster, "mdep", "d", namespace, "Ready")
    names = {
        kind: [o["metadata"]["name"] for o in get(cluster, kind, "-n", namespace)["items"]]
        for kind in ("deployments", "services")
    }
    assert names == {"deployments": ["d"], "services": ["d"]}


def test_kill_9_while_the_deployment_is_created(cluster, namespace, operator, output_pvc):
    apply(cluster, make_model("m"), namespace)
    wait_phase(cluster, "ftm", "m", namespace, "Ready")
    apply(cluster, make_deployment("d", "m"), namespace)
    wait_for("the Deployment", lambda: get(cluster, "deployment", "d", "-n", namespace))
    operator.stop(signal.SIGKILL)
    operator.start()
    wait_phase(cluster, "mdep", "d", namespace, "Ready")
    assert len(get(cluster, "deployments", "-n", namespace)["items"]) == 1
    assert len(get(cluster, "services", "-n", namespace)["items"]) == 1
