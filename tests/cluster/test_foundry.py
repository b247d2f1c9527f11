"""The Foundry backend end to end: FineTuneJob, FineTunedModel and ModelDeployment with
`backend: foundry`, on the real control plane, with the operator as its own process
talking through the real azure-ai-ml / azure-identity to tests/azurefake.

Assertions read what the fake received and holds (jobs, endpoints, models) and what the
API server holds (status, events, Secrets); nothing in the operator is patched.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from kubetune.localcluster.controlplane import ControlPlane
from tests.azurefake import AzureFake, Fault
from tests.factories import API
from tests.kube import OperatorProcess, apply, get, wait_for

if TYPE_CHECKING:
    from tests.azurefake.fixtures import WorkloadIdentity

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
pytest_plugins = ("tests.azurefake.fixtures",)

PHI = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/7"
ROOT = Path(__file__).resolve().parents[2]
SP_SECRET = "foundry-sp-secret-do-not-print"
EXAMPLES = [
    line
    for line in yaml.safe_load((ROOT / "examples" / "00-xbox-data.yaml").read_text())["data"][
        "train.jsonl"
    ].splitlines()
    if line.strip()
]
FAST_POLLS = (
    "--foundry-poll-interval=0.3",
    "--foundry-max-poll-interval=1",
    "--foundry-endpoint-check-interval=1",
)


@pytest.fixture
def foundry_operator(
    cluster: ControlPlane,
    namespace: str,
    tmp_path: Path,
    azure_fake: AzureFake,
    workload_identity: WorkloadIdentity,
) -> Iterator[OperatorProcess]:
    """The operator, with the fake's environment and a Workload Identity, polling fast."""
    cluster.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "00-xbox-data.yaml"))
    op = OperatorProcess(
        cluster, tmp_path / "operator.log", ("--namespace", namespace, *FAST_POLLS)
    )
    op.start()
    try:
        yield op
    finally:
        op.stop()


def foundry_job(fake: AzureFake, name: str = "xbox", **spec: Any) -> dict[str, Any]:
    ws = fake.state.workspace
    body: dict[str, Any] = {
        "backend": "foundry",
        "baseModel": PHI,
        "dataset": {
            "training": {"configMap": {"name": "xbox-support-data", "key": "train.jsonl"}},
            "validationSplit": 0.2,
        },
        "hyperparameters": {
            "epochs": 2,
            "learningRateMultiplier": 0.5,
            "batchSizeMultiplier": 4,
            "extra": {"weight_decay": "0.01"},
        },
        "workspace": {
            "subscriptionId": ws.subscription_id,
            "resourceGroup": ws.resource_group,
            "name": ws.name,
            "region": ws.location,
        },
    }
    body.update(spec)
    return {"apiVersion": API, "kind": "FineTuneJob", "metadata": {"name": name}, "spec": body}


def foundry_deployment(name: str, model: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"modelRef": {"name": model}, "backend": "foundry"},
    }


def delete_azure_model_with_it(cluster: ControlPlane, namespace: str, model: str) -> None:
    """deletionPolicy: Delete, so deleting the FineTunedModel deletes the Azure model too."""
    patch = '{"spec": {"deletionPolicy": "Delete"}}'
    cluster.kubectl("patch", "ftm", model, "-n", namespace, "--type=merge", "-p", patch)


def status_of(cluster: ControlPlane, namespace: str, kind: str, name: str) -> dict[str, Any]:
    obj = get(cluster, kind, name, "-n", namespace)
    return (obj or {}).get("status") or {}


def wait_phase(
    cluster: ControlPlane, namespace: str, kind: str, name: str, phase: str, timeout: float = 60
) -> dict[str, Any]:
    return wait_for(
        f"{kind} {name} {phase}",
        lambda: (s := status_of(cluster, namespace, kind, name)).get("phase") == phase and s,
        timeout,
    )


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def failed_before_upload(
    cluster: ControlPlane, namespace: str, fake: AzureFake, reason: str
) -> dict[str, Any]:
    """The Failed condition of job xbox, which must have failed before anything was sent."""
    cond = condition(wait_phase(cluster, namespace, "ftj", "xbox", "Failed"), "Failed")
    assert cond["reason"] == reason
    assert not fake.calls("blob.put")
    assert not fake.calls("job.put")
    return cond


def events_of(cluster: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    events = get(
        cluster, "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )
    return events["items"]


def uid_of(cluster: ControlPlane, namespace: str, kind: str, name: str) -> str:
    return str(get(cluster, kind, name, "-n", namespace)["metadata"]["uid"])


def scrape(op: OperatorProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.port}/metrics", timeout=5) as r:
        return str(r.read().decode())


# --- 1. happy path ------------------------------------------------------------------


def test_job_model_and_endpoint_on_azure_with_the_deletion_rule(
    cluster: ControlPlane, namespace: str, azure_fake: AzureFake, foundry_operator: OperatorProcess
) -> None:
    assert apply(cluster, foundry_job(azure_fake), namespace).returncode == 0
    uid = uid_of(cluster, namespace, "ftj", "xbox")
    done = wait_phase(cluster, namespace, "ftj", "xbox", "Succeeded", timeout=90)

    # Status: the deterministic job name, Azure's raw status, the portal link, the model.
    azure = done["foundry"]
    assert azure["jobName"] == f"kubetune-{uid}"
    assert azure["status"] == "Completed"
    assert azure["portalUrl"].startswith("https://")
    wait_for("model recorded", lambda: status_of(cluster, namespace, "ftj", "xbox").get("model"))
    assert condition(done, "WorkspaceReady")["status"] == "True"
    assert "eastus2" in condition(done, "WorkspaceReady")["message"]
    examples = len(EXAMPLES)
    held_out = round(0.2 * examples)
    assert condition(done, "DataReady")["message"] == (
        f"{examples - held_out} training and {held_out} validation examples"
    )

    # Exactly one submission, with the body Azure expects.
    (put,) = azure_fake.calls("job.put")
    details = put.json()["properties"]["fineTuningDetails"]
    assert details["taskType"].lower() == "chatcompletion"
    assert details["model"]["uri"] == PHI
    assert details["hyperParameters"] == {
        "n_epochs": "2",
        "learning_rate_multiplier": "0.5",
        "batch_size": "4",
        "weight_decay": "0.01",
    }
    for key, file in (("trainingData", "training.jsonl"), ("validationData", "validation.jsonl")):
        assert details[key]["uri"].endswith(f"/{file}")
    uploaded = {k.rsplit("/", 1)[1]: v.data for k, v in azure_fake.blobs().items()}
    assert uploaded["training.jsonl"].count(b"\n") == examples - held_out
    assert uploaded["validation.jsonl"].count(b"\n") == held_out

    # The FineTunedModel points at the Azure model, in its workspace.
    job = azure_fake.job(azure["jobName"])
    model_id = azure_fake.state.serverless_model_id(job.model_name, job.model_version)
    model = get(cluster, "ftm", "xbox", "-n", namespace)
    assert model["spec"]["source"] == {"azureModelId": model_id}
    assert model["spec"]["workspace"]["name"] == azure_fake.state.workspace.name
    wait_phase(cluster, namespace, "ftm", "xbox", "Ready")
    delete_azure_model_with_it(cluster, namespace, "xbox")

    # A serverless endpoint, its key in a Secret the deployment owns (never in status).
    deployment = foundry_deployment("xbox-endpoint", "xbox")
    assert apply(cluster, deployment, namespace).returncode == 0
    ready = wait_phase(cluster, namespace, "mdep", "xbox-endpoint", "Ready")
    (endpoint,) = azure_fake.state.endpoints.values()
    assert ready["endpoint"] == f"https://{endpoint.name}.models.{azure_fake.state.storage_suffix}"
    assert ready["foundry"]["provisioningState"] == "Succeeded"
    secret = get(cluster, "secret", ready["foundry"]["keySecret"], "-n", namespace)
    assert base64.b64decode(secret["data"]["primary-key"]).decode() == endpoint.keys[0]
    assert secret["metadata"]["ownerReferences"][0]["name"] == "xbox-endpoint"
    assert endpoint.keys[0] not in json.dumps(ready)
    assert [
        r.json()["properties"]["modelSettings"]["modelId"] for r in azure_fake.calls("endpoint.put")
    ] == [model_id]

    # The rule: the model waits for its deployment, then Azure resources go in order.
    cluster.kubectl("delete", "ftm", "xbox", "-n", namespace, "--wait=false")
    blocked = wait_phase(cluster, namespace, "ftm", "xbox", "DeletionBlocked")
    assert "xbox-endpoint" in condition(blocked, "DeletionBlocked")["message"]
    assert not azure_fake.calls("model.delete")
    cluster.kubectl("delete", "mdep", "xbox-endpoint", "-n", namespace, "--wait=false")
    wait_for("model gone", lambda: get(cluster, "ftm", "xbox", "-n", namespace) is None, 60)
    assert not azure_fake.state.endpoints
    assert (
        job.model_name not in azure_fake.state.models or not azure_fake.state.models[job.model_name]
    )
    routes = [
        r.route for r in azure_fake.requests if r.route in ("endpoint.delete", "model.delete")
    ]
    assert routes[0] == "endpoint.delete"
    assert routes[-1] == "model.delete"


def azure_requests(metrics: str) -> dict[tuple[str, str], float]:
    """kubetune_azure_requests_total by (operation, code), from /metrics text."""
    found: dict[tuple[str, str], float] = {}
    for line in metrics.splitlines():
        if line.startswith("kubetune_azure_requests_total{"):
            labels, value = line[len("kubetune_azure_requests_total{") :].split("} ")
            pairs = dict(p.split("=", 1) for p in labels.split(","))
            found[(pairs["operation"].strip('"'), pairs["code"].strip('"'))] = float(value)
    return found


# --- 2. faults ------------------------------------------------------------------------


def test_throttled_submission_waits_for_retry_after_and_every_call_is_counted(
    cluster: ControlPlane, namespace: str, azure_fake: AzureFake, foundry_operator: OperatorProcess
) -> None:
    azure_fake.inject("job.put", Fault.throttle(retry_after=3))
    assert apply(cluster, foundry_job(azure_fake), namespace).returncode == 0
    wait_phase(cluster, namespace, "ftj", "xbox", "Succeeded", timeout=90)
    throttled, accepted = azure_fake.calls("job.put")
    assert (throttled.status, accepted.status) == (429, 201)
    assert accepted.at - throttled.at >= 3
    assert len(azure_fake.state.jobs) == 1

    # /metrics counts what the fake answered, by operation and status code.
    counted = azure_requests(scrape(foundry_operator))
    by_route: dict[tuple[str, int], int] = {}
    for r in azure_fake.requests:
        by_route[(r.route, r.status)] = by_route.get((r.route, r.status), 0) + 1
    assert counted[("PUT jobs", "429")] == by_route[("job.put", 429)] == 1
    assert counted[("PUT jobs", "201")] == by_route[("job.put", 201)] == 1
    assert counted[("GET workspace", "200")] == by_route[("workspace.get", 200)]


def test_server_errors_and_resets_are_retried(
    cluster: ControlPlane, namespace: str, azure_fake: AzureFake, foundry_operator: OperatorProcess
) -> None:
    azure_fake.inject("workspace.get", Fault.server_error(503, retry_after=1), times=2)
    azure_fake.inject("job.get", Fault.server_error(500, retry_after=1))
    azure_fake.inject("job.put", Fault.reset())
    assert apply(cluster, foundry_job(azure_fake), namespace).returncode == 0
    wait_phase(cluster, namespace, "ftj", "xbox", "Succeeded", timeout=120)
    assert [r.status for r in azure_fake.calls("workspace.get")][:3] == [503, 503, 200]
    assert 0 in [r.status for r in azure_fake.calls("job.put")]
    assert len(azure_fake.state.jobs) == 1


@pytest.mark.parametrize("fault", [Fault.unauthorized(), Fault.forbidden()], ids=["401", "403"])
def test_auth_failure_is_reported_and_recovers(
    cluster: ControlPlane,
    namespace: str,
    azure_fake: AzureFake,
    foundry_operator: OperatorProcess,
    fault: Fault,
) -> None:
    azure_fake.inject("workspace.get", fault, times=None)
    assert apply(cluster, foundry_job(azure_fake), namespace).returncode == 0
    failed = wait_for(
        "AzureAuthFailed",
        lambda: (
            condition(status_of(cluster, namespace, "ftj", "xbox"), "WorkspaceReady").get("reason")
            == "AzureAuthFailed"
            and status_of(cluster, namespace, "ftj", "xbox")
        ),
    )
    message = condition(failed, "WorkspaceReady")["message"]
    assert "Azure AI Developer on the resource group" in message
    assert azure_fake.state.workspace.resource_group in message
    assert failed["phase"] == "Validating"
    assert not azure_fake.calls("job.put")
    assert not azure_fake.calls("blob.put")
    warnings = [e for e in events_of(cluster, namespace, "xbox") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["AzureAuthFailed"]
    azure_fake.clear_faults()  # the role was granted
    wait_phase(cluster, namespace, "ftj", "xbox", "Succeeded", timeout=90)


def test_azure_job_failure_carries_azures_message(
    cluster: ControlPlane, namespace: str, azure_fake: AzureFake, foundry_operator: OperatorProcess
) -> None:
    azure_fake.state.auto_advance = False
    assert apply(cluster, foundry_job(azure_fake), namespace).returncode == 0
    name = f"kubetune-{uid_of(cluster, namespace, 'ftj', 'xbox')}"
    wait_for("Azure job", lambda: name in azure_fake.state.jobs)
    azure_fake.set_job_outcome(name, "Failed", "Training data line 7: messages must alternate")
    azure_fake.advance_job(name, to="Running")
    wait_phase(cluster, namespace, "ftj", "xbox", "Running")
    azure_fake.advance_job(name, to="Failed")
    failed = wait_phase(cluster, namespace, "ftj", "xbox", "Failed")
    assert failed["foundry"]["status"] == "Failed"
    cond = condition(failed, "Failed")
    assert cond["reason"] == "AzureJobFailed"
    assert "Training data line 7: messages must alternate" in cond["message"]
    assert get(cluster, "ftm", "xbox", "-n", namespace) is None


@pytest.mark.parametrize("ours", [True, False], ids=["ours-adopted", "theirs-refused"])
def test_existing_job_name_is_adopted_only_when_ours(
    cluster: ControlPlane,
    namespace: str,
    azure_fake: AzureFake,
    foundry_operator: OperatorProcess,
    tmp_path: Path,
    ours: bool,
) -> None:
    from kubetune.backends.foundry import FineTuningRequest, WorkspaceRef
    from kubetune.backends.foundry.client import build_credential, connect

    assert apply(cluster, foundry_job(azure_fake, suspend=True), namespace).returncode == 0
    wait_phase(cluster, namespace, "ftj", "xbox", "Suspended")
    uid = uid_of(cluster, namespace, "ftj", "xbox")
    train, validation = tmp_path / "training.jsonl", tmp_path / "validation.jsonl"
    train.write_text("\n".join(EXAMPLES[:10]) + "\n")
    validation.write_text(EXAMPLES[10] + "\n")
    ws = azure_fake.state.workspace
    client = connect(
        WorkspaceRef(ws.subscription_id, ws.resource_group, ws.name), build_credential()
    )
    client.submit_finetuning_job(
        FineTuningRequest(
            name=f"kubetune-{uid}",
            owner=uid if ours else "someone-else",
            model_id=PHI,
            training_file=train,
            validation_file=validation,
            output_model_prefix="xbox",
        )
    )
    cluster.kubectl(
        "patch",
        "ftj",
        "xbox",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"suspend": false}}',
    )
    if ours:
        wait_phase(cluster, namespace, "ftj", "xbox", "Succeeded", timeout=90)
        reasons = {e["reason"]: e["message"] for e in events_of(cluster, namespace, "xbox")}
        assert reasons["Submitted"].startswith("Adopted the existing Azure job")
    else:
        failed = wait_phase(cluster, namespace, "ftj", "xbox", "Failed")
        assert condition(failed, "Failed")["reason"] == "JobNameConflict"
        assert "someone-else" in condition(failed, "Failed")["message"]
    assert len(azure_fake.calls("job.put")) == 1  # the test's own


def test_region_without_serverless_finetuning_is_refused_before_any_upload(
    cluster: ControlPlane, namespace: str, azure_fake: AzureFake, foundry_operator: OperatorProcess
) -> None:
    with azure_fake.state.lock:
        azure_fake.state.workspace = replace(azure_fake.state.workspace, location="westus3")
    assert apply(cluster, foundry_job(azure_fake), namespace).returncode == 0
    cond = failed_before_upload(cluster, namespace, azure_fake, "RegionNotSupported")
    assert "eastus2" in cond["message"]
    assert "westus3" in cond["message"]


def test_invalid_data_fails_with_file_and_line_before_any_upload(
    cluster: ControlPlane, namespace: str, azure_fake: AzureFake, foundry_operator: OperatorProcess
) -> None:
    lines = [*EXAMPLES[:11], '{"messages": [{"role": "user", "content": "hi"}]}']
    cluster.kubectl(
        "create",
        "configmap",
        "broken",
        "-n",
        namespace,
        "--from-literal",
        "train.jsonl=" + "\n".join(lines) + "\n",
    )
    job = foundry_job(azure_fake)
    job["spec"]["dataset"]["training"] = {"configMap": {"name": "broken", "key": "train.jsonl"}}
    assert apply(cluster, job, namespace).returncode == 0
    cond = failed_before_upload(cluster, namespace, azure_fake, "InvalidInput")
    assert "spec.dataset.training (configMap broken/train.jsonl) line 12" in cond["message"]


# --- suspend, delete, drift -----------------------------------------------------------


def test_suspend_and_delete_cancel_the_azure_job(
    cluster: ControlPlane, namespace: str, azure_fake: AzureFake, foundry_operator: OperatorProcess
) -> None:
    azure_fake.state.auto_advance = False
    for name in ("suspended", "deleted"):
        assert apply(cluster, foundry_job(azure_fake, name), namespace).returncode == 0
    jobs = {n: f"kubetune-{uid_of(cluster, namespace, 'ftj', n)}" for n in ("suspended", "deleted")}
    for name, job in jobs.items():
        wait_for(f"{name} submitted", lambda job=job: job in azure_fake.state.jobs)
        wait_phase(cluster, namespace, "ftj", name, "Queued")

    cluster.kubectl(
        "patch",
        "ftj",
        "suspended",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"suspend": true}}',
    )
    wait_for(
        "cancel",
        lambda: any(
            r.path.endswith(f"{jobs['suspended']}/cancel") for r in azure_fake.calls("job.cancel")
        ),
    )
    azure_fake.advance_job(jobs["suspended"])  # CancelRequested -> Canceled
    cancelled = wait_phase(cluster, namespace, "ftj", "suspended", "Cancelled")
    assert condition(cancelled, "Failed") == {}

    cluster.kubectl("delete", "ftj", "deleted", "-n", namespace, "--wait=false")
    wait_for("deleted", lambda: get(cluster, "ftj", "deleted", "-n", namespace) is None)
    assert azure_fake.job(jobs["deleted"]).status == "CancelRequested"
    assert len(azure_fake.state.jobs) == 2


def test_endpoint_removed_by_azure_is_reported(
    cluster: ControlPlane, namespace: str, azure_fake: AzureFake, foundry_operator: OperatorProcess
) -> None:
    assert apply(cluster, foundry_job(azure_fake), namespace).returncode == 0
    wait_for("model", lambda: status_of(cluster, namespace, "ftj", "xbox").get("model"), 90)
    assert apply(cluster, foundry_deployment("xbox-endpoint", "xbox"), namespace).returncode == 0
    wait_phase(cluster, namespace, "mdep", "xbox-endpoint", "Ready")
    with azure_fake.state.lock:
        azure_fake.state.endpoints.clear()  # Azure removed it after 15 idle days
    gone = wait_phase(cluster, namespace, "mdep", "xbox-endpoint", "Failed")
    cond = condition(gone, "Available")
    assert cond["reason"] == "EndpointMissing"
    assert "no longer exists on Azure" in cond["message"]
    assert gone["foundry"]["provisioningState"] == "Missing"
    assert "endpoint" not in gone


# --- 3. restarts and secrets ------------------------------------------------------------


def test_operator_killed_between_submit_and_status_write_makes_one_azure_job(
    cluster: ControlPlane, namespace: str, azure_fake: AzureFake, foundry_operator: OperatorProcess
) -> None:
    # Azure accepts the PUT but the answer never arrives; the operator dies right then.
    azure_fake.inject("job.put", Fault.reset(after=True), times=None)
    assert apply(cluster, foundry_job(azure_fake), namespace).returncode == 0
    wait_for("the PUT", lambda: azure_fake.calls("job.put"))
    foundry_operator.stop(signal.SIGKILL)
    status = status_of(cluster, namespace, "ftj", "xbox")
    assert "status" not in status["foundry"]  # the submission was never recorded
    azure_fake.clear_faults()
    foundry_operator.start()
    wait_phase(cluster, namespace, "ftj", "xbox", "Succeeded", timeout=90)
    assert len(azure_fake.state.jobs) == 1
    assert len(azure_fake.calls("job.put")) == 1
    reasons = {e["reason"]: e["message"] for e in events_of(cluster, namespace, "xbox")}
    assert reasons["Submitted"].startswith("Adopted the existing Azure job")


def test_a_replica_outranked_by_a_new_peer_stops_calling_azure(
    cluster: ControlPlane,
    namespace: str,
    azure_fake: AzureFake,
    workload_identity: WorkloadIdentity,
    peering_crds: None,
    tmp_path: Path,
) -> None:
    """Kopf pauses its own handlers under a peer with a higher priority; our Azure polls
    run outside them and must stop too, and the new peer carries the job on."""
    cluster.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "00-xbox-data.yaml"))
    peering = ("--namespace", namespace, "--peering", "kubetune", *FAST_POLLS)
    low = OperatorProcess(cluster, tmp_path / "low.log", (*peering, "--priority", "100"))
    high = OperatorProcess(cluster, tmp_path / "high.log", (*peering, "--priority", "200"))
    azure_fake.state.auto_advance = False
    low.start()
    try:
        wait_for("the lone replica to act", lambda: "Resuming operations" in low.log())
        assert apply(cluster, foundry_job(azure_fake), namespace).returncode == 0
        name = f"kubetune-{uid_of(cluster, namespace, 'ftj', 'xbox')}"
        wait_phase(cluster, namespace, "ftj", "xbox", "Queued")
        wait_for("the low replica polling", lambda: len(azure_fake.calls("job.get")) >= 2)

        high.start()
        wait_for("the low replica to pause", lambda: "Pausing operations" in low.log())
        time.sleep(3)  # a poll step under way when the pause came may end its calls
        paused_at = azure_requests(scrape(low))
        azure_fake.advance_job(name, to="Running")
        wait_phase(cluster, namespace, "ftj", "xbox", "Running")
        azure_fake.advance_job(name, to="Completed")
        wait_phase(cluster, namespace, "ftj", "xbox", "Succeeded", timeout=60)
        assert azure_requests(scrape(low)) == paused_at
        assert ("GET jobs", "200") in azure_requests(scrape(high))
        assert "phase=Succeeded" in high.log()
        assert "phase=Running" not in low.log()
    finally:
        high.stop()
        low.stop()
    assert len(azure_fake.state.jobs) == 1


def test_service_principal_secret_never_shows(
    cluster: ControlPlane, namespace: str, azure_fake: AzureFake, foundry_operator: OperatorProcess
) -> None:
    client_id = "00000000-0000-0000-0000-0000000005b1"
    azure_fake.state.client_secrets[client_id] = SP_SECRET
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "azure-sp",
        "-n",
        namespace,
        "--from-literal=AZURE_TENANT_ID=00000000-0000-0000-0000-0000000074e7",
        f"--from-literal=AZURE_CLIENT_ID={client_id}",
        f"--from-literal=AZURE_CLIENT_SECRET={SP_SECRET}",
    )
    job = foundry_job(azure_fake)
    job["spec"]["workspace"]["credentials"] = {"secretRef": {"name": "azure-sp"}}
    assert apply(cluster, job, namespace).returncode == 0
    wait_for("model", lambda: status_of(cluster, namespace, "ftj", "xbox").get("model"), 90)
    assert apply(cluster, foundry_deployment("xbox-endpoint", "xbox"), namespace).returncode == 0
    wait_phase(cluster, namespace, "mdep", "xbox-endpoint", "Ready")
    tokens = [r.form() for r in azure_fake.calls("token")]
    assert any(t.get("client_secret") == SP_SECRET for t in tokens)  # the Secret was used
    (endpoint,) = azure_fake.state.endpoints.values()
    secrets = [SP_SECRET, *endpoint.keys, azure_fake.state.workspace.sas_token.split("sig=")[1]]
    shown = {
        "status": json.dumps([get(cluster, k, "-n", namespace) for k in ("ftj", "ftm", "mdep")]),
        "events": json.dumps(get(cluster, "events", "-n", namespace)),
        "log": foundry_operator.log(),
    }
    for where, text in shown.items():
        for secret in secrets:
            assert secret not in text, f"a secret value appears in the {where}"


# --- data sources -----------------------------------------------------------------------


@pytest.fixture
def served_file(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain HTTP server on loopback serving tmp_path/www; yields (base URL, directory)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_training_data_from_a_blob_and_validation_from_a_url(
    cluster: ControlPlane,
    namespace: str,
    azure_fake: AzureFake,
    foundry_operator: OperatorProcess,
    served_file: tuple[str, Path],
) -> None:
    from tests.azurefake.state import Blob

    ws = azure_fake.state.workspace
    azure_fake.state.blobs[f"{ws.container}/datasets/train.jsonl"] = Blob(
        ("\n".join(EXAMPLES[:10]) + "\n").encode()
    )
    base_url, root = served_file
    (root / "valid.jsonl").write_text("\n".join(EXAMPLES[10:]) + "\n")
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "data-sas",
        "-n",
        namespace,
        f"--from-literal=sas={ws.sas_token}",
    )
    job = foundry_job(azure_fake)
    job["spec"]["dataset"] = {
        "training": {
            "azureBlob": {
                "accountUrl": f"https://{ws.storage_account}.blob.{azure_fake.state.storage_suffix}",
                "container": ws.container,
                "blob": "datasets/train.jsonl",
                "sasTokenSecretRef": {"name": "data-sas", "key": "sas"},
            }
        },
        "validation": {"url": f"{base_url}/valid.jsonl"},
    }
    assert apply(cluster, job, namespace).returncode == 0
    done = wait_phase(cluster, namespace, "ftj", "xbox", "Succeeded", timeout=90)
    assert condition(done, "DataReady")["message"] == (
        f"10 training and {len(EXAMPLES) - 10} validation examples"
    )
    uploaded = {
        k.rsplit("/", 1)[1]: v.data for k, v in azure_fake.blobs().items() if "LocalUpload" in k
    }
    assert uploaded["validation.jsonl"] == (root / "valid.jsonl").read_bytes()


def test_missing_url_fails_naming_the_field(
    cluster: ControlPlane,
    namespace: str,
    azure_fake: AzureFake,
    foundry_operator: OperatorProcess,
    served_file: tuple[str, Path],
) -> None:
    job = foundry_job(azure_fake)
    job["spec"]["dataset"]["validationSplit"] = None
    job["spec"]["dataset"]["validation"] = {"url": f"{served_file[0]}/nothing-here.jsonl"}
    assert apply(cluster, job, namespace).returncode == 0
    failed = wait_phase(cluster, namespace, "ftj", "xbox", "Failed")
    cond = condition(failed, "Failed")
    assert cond["reason"] == "InvalidInput"
    assert "spec.dataset.validation" in cond["message"]
    assert "HTTP 404" in cond["message"]


def test_azure_refusing_model_deletion_blocks_it_until_the_endpoint_goes(
    cluster: ControlPlane, namespace: str, azure_fake: AzureFake, foundry_operator: OperatorProcess
) -> None:
    from kubetune.backends.foundry import WorkspaceRef
    from kubetune.backends.foundry.client import build_credential, connect

    assert apply(cluster, foundry_job(azure_fake), namespace).returncode == 0
    wait_for("model", lambda: status_of(cluster, namespace, "ftj", "xbox").get("model"), 90)
    wait_phase(cluster, namespace, "ftm", "xbox", "Ready")
    model_id = get(cluster, "ftm", "xbox", "-n", namespace)["spec"]["source"]["azureModelId"]
    # An endpoint made outside kubetune (in the portal, say) serves the model.
    ws = azure_fake.state.workspace
    client = connect(
        WorkspaceRef(ws.subscription_id, ws.resource_group, ws.name), build_credential()
    )
    client.create_endpoint("portal-made", model_id, location=ws.location)
    delete_azure_model_with_it(cluster, namespace, "xbox")
    cluster.kubectl("delete", "ftm", "xbox", "-n", namespace, "--wait=false")
    blocked = wait_phase(cluster, namespace, "ftm", "xbox", "DeletionBlocked")
    cond = condition(blocked, "DeletionBlocked")
    assert cond["reason"] == "AzureDeploymentsExist"
    assert "serverless endpoint still serves it" in cond["message"]
    warnings = [e for e in events_of(cluster, namespace, "xbox") if e["type"] == "Warning"]
    assert "DeletionBlocked" in [e["reason"] for e in warnings]
    # Blocked: asked again at the poll interval (1 s here), not on every event.
    time.sleep(1)
    before = len(azure_fake.calls("model.delete"))
    time.sleep(4)
    assert len(azure_fake.calls("model.delete")) - before <= 5
    with azure_fake.state.lock:
        azure_fake.state.endpoints.pop("portal-made", None)
    wait_for("model gone", lambda: get(cluster, "ftm", "xbox", "-n", namespace) is None, 90)
    assert [r.status for r in azure_fake.calls("model.delete")][-1] in (200, 204)


def test_sas_secret_without_its_key_fails_naming_it(
    cluster: ControlPlane, namespace: str, azure_fake: AzureFake, foundry_operator: OperatorProcess
) -> None:
    cluster.kubectl(
        "create", "secret", "generic", "data-sas", "-n", namespace, "--from-literal=other=x"
    )
    job = foundry_job(azure_fake)
    job["spec"]["dataset"]["training"] = {
        "azureBlob": {
            "accountUrl": "https://kubetunefake.blob.fake.invalid",
            "container": "data",
            "blob": "train.jsonl",
            "sasTokenSecretRef": {"name": "data-sas", "key": "sas"},
        }
    }
    assert apply(cluster, job, namespace).returncode == 0
    failed = wait_phase(cluster, namespace, "ftj", "xbox", "Failed")
    assert condition(failed, "Failed")["reason"] == "InvalidInput"
    assert "Secret data-sas has no key sas" in condition(failed, "Failed")["message"]
    assert condition(failed, "DataReady")["reason"] == "InvalidInput"


def test_foundry_deployment_of_a_local_model_fails_clearly(
    cluster: ControlPlane, namespace: str, azure_fake: AzureFake, foundry_operator: OperatorProcess
) -> None:
    model = {
        "apiVersion": API,
        "kind": "FineTunedModel",
        "metadata": {"name": "local-adapter"},
        "spec": {
            "baseModel": "microsoft/Phi-3-mini-4k-instruct",
            "source": {"pvc": {"claimName": "models", "path": "adapters/x"}},
        },
    }
    assert apply(cluster, model, namespace).returncode == 0
    assert apply(cluster, foundry_deployment("d", "local-adapter"), namespace).returncode == 0
    failed = wait_phase(cluster, namespace, "mdep", "d", "Failed")
    cond = condition(failed, "Available")
    assert cond["reason"] == "NotAnAzureModel"
    assert "local-adapter is not an Azure model" in cond["message"]
    assert not azure_fake.calls("endpoint.put")


def test_missing_workspace_is_reported_before_anything_is_sent(
    cluster: ControlPlane, namespace: str, azure_fake: AzureFake, foundry_operator: OperatorProcess
) -> None:
    azure_fake.inject("workspace.get", Fault.not_found(), times=None)
    assert apply(cluster, foundry_job(azure_fake), namespace).returncode == 0
    reported = wait_for(
        "WorkspaceNotFound",
        lambda: (
            (s := status_of(cluster, namespace, "ftj", "xbox"))
            and condition(s, "WorkspaceReady").get("reason") == "WorkspaceNotFound"
            and s
        ),
    )
    assert azure_fake.state.workspace.name in condition(reported, "WorkspaceReady")["message"]
    assert reported["phase"] == "Validating"
    assert not azure_fake.calls("job.put")


@pytest.mark.parametrize("defaults", [True, False], ids=["operator-default", "none"])
def test_job_without_a_workspace_uses_the_operators_default(
    cluster: ControlPlane,
    namespace: str,
    azure_fake: AzureFake,
    workload_identity: WorkloadIdentity,
    tmp_path: Path,
    defaults: bool,
) -> None:
    ws = azure_fake.state.workspace
    flags = (
        f"--foundry-subscription-id={ws.subscription_id}",
        f"--foundry-resource-group={ws.resource_group}",
        f"--foundry-workspace={ws.name}",
    )
    cluster.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "00-xbox-data.yaml"))
    op = OperatorProcess(
        cluster,
        tmp_path / "operator.log",
        ("--namespace", namespace, *FAST_POLLS, *(flags if defaults else ())),
    )
    op.start()
    try:
        job = foundry_job(azure_fake)
        del job["spec"]["workspace"]
        assert apply(cluster, job, namespace).returncode == 0
        if defaults:
            wait_for("model", lambda: status_of(cluster, namespace, "ftj", "xbox").get("model"), 90)
            model = get(cluster, "ftm", "xbox", "-n", namespace)
            assert model["spec"]["workspace"]["name"] == ws.name
        else:
            failed = wait_phase(cluster, namespace, "ftj", "xbox", "Failed")
            assert condition(failed, "Failed")["reason"] == "InvalidSpec"
            assert "no Azure workspace" in condition(failed, "Failed")["message"]
            assert not azure_fake.requests
    finally:
        op.stop()
