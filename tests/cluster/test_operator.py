"""The operator skeleton, as its own process against the real API server."""

from __future__ import annotations

import json
import urllib.request

import pytest

from kubetune.localcluster.nodes import GPU_PRODUCT_LABEL
from tests.factories import make_finetunejob
from tests.kube import ROOT, OperatorProcess, apply, get, wait_for

pytestmark = pytest.mark.cluster


def phase_of(cluster, kind: str, name: str, namespace: str) -> str | None:
    obj = get(cluster, kind, name, "-n", namespace)
    return obj and obj.get("status", {}).get("phase")


def test_examples_run(cluster, operator, namespace, output_volume):
    cluster.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples"))
    for name in ("xbox-support", "xbox-support-qlora"):
        wait_for(
            f"{name} Running", lambda n=name: phase_of(cluster, "ftj", n, namespace) == "Running"
        )
    wait_for(
        "mdep WaitingForModel",
        lambda: phase_of(cluster, "mdep", "xbox-support", namespace) == "WaitingForModel",
    )
    ftj = get(cluster, "ftj", "xbox-support", "-n", namespace)
    status = ftj["status"]
    assert status["observedGeneration"] == ftj["metadata"]["generation"]
    (accepted,) = [c for c in status["conditions"] if c["type"] == "Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("True", "Accepted")
    # kubectl get shows the phase the operator set.
    row = cluster.kubectl(
        "get", "ftj", "xbox-support", "-n", namespace, "--no-headers"
    ).stdout.split()
    assert row[:3] == ["xbox-support", "local", "Running"]


def test_model_registered_by_hand_is_ready(cluster, operator, namespace):
    model = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTunedModel",
        "metadata": {"name": "by-hand"},
        "spec": {
            "baseModel": "microsoft/Phi-3-mini-4k-instruct",
            "source": {"pvc": {"claimName": "models", "path": "adapter"}},
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(model))
    wait_for("ftm Ready", lambda: phase_of(cluster, "ftm", "by-hand", namespace) == "Ready")


def test_observed_generation_follows_spec_changes(cluster, operator, namespace):
    cluster.kubectl(
        "apply", "-n", namespace, "-f", str(ROOT / "examples" / "10-finetunejob-lora.yaml")
    )
    wait_for("first reconcile", lambda: phase_of(cluster, "ftj", "xbox-support", namespace))
    cluster.kubectl(
        "patch",
        "ftj",
        "xbox-support",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"hyperparameters": {"epochs": 5}}}',
    )
    wait_for(
        "observedGeneration 2",
        lambda: (
            get(cluster, "ftj", "xbox-support", "-n", namespace)["status"].get("observedGeneration")
            == 2
        ),
    )


def test_events_are_posted(cluster, operator, namespace, training_data, output_pvc):
    # A node selector no node matches: the job goes Queued without taking a GPU.
    job = make_finetunejob("xbox", nodeSelector={GPU_PRODUCT_LABEL: "no-such-gpu"})
    assert apply(cluster, job, namespace).returncode == 0
    events = wait_for(
        "an event for the job",
        lambda: [
            e
            for e in get(cluster, "events", "-n", namespace)["items"]
            if e["involvedObject"]["name"] == "xbox" and e["reason"] == "Unschedulable"
        ],
    )
    assert events[0]["involvedObject"]["kind"] == "FineTuneJob"
    assert events[0]["message"].startswith("Waiting for a node: ")
    # Acceptance (the first phase) is in the status and the log, not an Event.
    reasons = {e["reason"] for e in get(cluster, "events", "-n", namespace)["items"]}
    assert "Pending" not in reasons


def test_health_and_metrics(cluster, operator, namespace, training_data):
    cluster.kubectl(
        "apply", "-n", namespace, "-f", str(ROOT / "examples" / "10-finetunejob-lora.yaml")
    )
    wait_for("first reconcile", lambda: phase_of(cluster, "ftj", "xbox-support", namespace))
    base = f"http://127.0.0.1:{operator.port}"
    with urllib.request.urlopen(f"{base}/healthz") as r:
        assert r.status == 200

    def metrics() -> str:
        with urllib.request.urlopen(f"{base}/metrics") as r:
            return r.read().decode()

    ok = 'kubetune_reconcile_total{handler="reconcile",kind="FineTuneJob",result="ok"}'
    text = wait_for("a reconcile counted", lambda: next((t for t in [metrics()] if ok in t), None))
    assert "kubetune_reconcile_duration_seconds_bucket" in text


def test_json_logs(cluster, namespace, tmp_path):
    op = OperatorProcess(
        cluster, tmp_path / "op.log", ("--log-format", "json", "--namespace", namespace)
    )
    op.start()
    try:
        cluster.kubectl(
            "apply", "-n", namespace, "-f", str(ROOT / "examples" / "10-finetunejob-lora.yaml")
        )
        wait_for("a reconcile logged", lambda: "phase=Pending" in op.log())
    finally:
        op.stop()
    records = [json.loads(line) for line in op.log().splitlines() if line.strip()]
    assert any("kind=FineTuneJob phase=Pending" in r.get("message", "") for r in records)
