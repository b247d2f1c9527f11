"""The Foundry client through the real azure-ai-ml/azure-identity, against tests/azurefake.

Nothing is patched: the SDKs speak HTTPS to the fake on loopback (blob and inference hosts
through its CONNECT proxy), and assertions read what the fake received and stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
from prometheus_client import REGISTRY

from kubetune.backends.foundry import (
    ROLE,
    AzureAuthFailed,
    AzureNotFound,
    Cloud,
    FineTuningRequest,
    JobNameConflict,
    ModelInUse,
    RegionNotSupported,
    ServicePrincipal,
    WorkspaceRef,
    check_region,
    needs_marketplace_subscription,
    operation_of,
    redact,
    retry_after,
    serverless_model_id,
)
from kubetune.backends.foundry.client import FoundryClient, build_credential, connect
from kubetune.errors import BackendRejected, BackendUnavailable
from tests.azurefake import AzureFake, Fault

if TYPE_CHECKING:
    from tests.azurefake.fixtures import WorkloadIdentity

pytest_plugins = ("tests.azurefake.fixtures",)

PHI = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/7"
LLAMA = "azureml://registries/azureml-meta/models/Meta-Llama-3.1-8B-Instruct/versions/4"
SECRET = "sp-secret-value-never-logged"
MLS = "Microsoft.MachineLearningServices"
UPLOAD_SALT = b"Initialize for october 2021 AML CLI version"  # azure-ai-ml's content hash seed


def workspace_ref(fake: AzureFake) -> WorkspaceRef:
    ws = fake.state.workspace
    return WorkspaceRef(ws.subscription_id, ws.resource_group, ws.name)


def fake_cloud(fake: AzureFake) -> Cloud:
    return Cloud(fake.cloud_name, fake.cloud_metadata)


@pytest.fixture
def client(azure_fake: AzureFake) -> FoundryClient:
    sp = ServicePrincipal("fake-tenant", "fake-client", SECRET)
    credential = build_credential(sp, authority=azure_fake.base_url)
    return connect(workspace_ref(azure_fake), credential, cloud=fake_cloud(azure_fake))


def _examples(n: int, topic: str) -> str:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "You are an Xbox support agent."},
                {"role": "user", "content": f"{topic} question {i}"},
                {"role": "assistant", "content": f"{topic} answer {i}"},
            ]
        }
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def request_(tmp_path: Path) -> FineTuningRequest:
    train, validation = tmp_path / "train.jsonl", tmp_path / "validation.jsonl"
    train.write_text(_examples(10, "controller"))
    validation.write_text(_examples(2, "console"))
    return FineTuningRequest(
        name="kubetune-3f2a9c1e",
        owner="uid-3f2a9c1e",
        model_id=PHI,
        training_file=train,
        validation_file=validation,
        output_model_prefix="xbox-support",
        hyperparameters={"batch_size": "2", "learning_rate_multiplier": "1.0", "n_epochs": "3"},
    )


def _upload_path(path: Path) -> str:
    digest = hashlib.sha256(UPLOAD_SALT + path.read_bytes()).hexdigest()
    return f"LocalUpload/{digest}/{path.name}"


def _blob_puts(fake: AzureFake, path: Path) -> list[str]:
    return [
        r.query.get("comp", "data") for r in fake.calls("blob.put") if r.path.endswith(path.name)
    ]


# --- submission ---------------------------------------------------------------


def test_submit_sends_the_finetuning_body_and_uploads_content_addressed(
    azure_fake: AzureFake, client: FoundryClient, request_: FineTuningRequest
) -> None:
    job = client.submit_finetuning_job(request_)

    assert (job.name, job.status, job.adopted) == (request_.name, "NotStarted", False)
    [put] = azure_fake.calls("job.put")
    assert put.path.endswith(f"/jobs/{request_.name}")
    props = put.json()["properties"]
    details = props["fineTuningDetails"]
    train_path, validation_path = (
        _upload_path(request_.training_file),
        _upload_path(request_.validation_file),
    )
    assert props["jobType"] == "FineTuning"
    assert props["experimentName"] == "kubetune"
    assert props["tags"] == {"kubetune.owner": request_.owner}
    assert props["outputs"]["registered_model"]["assetName"] == "xbox-support"
    assert details["taskType"] == "chatCompletion"
    assert details["model"]["uri"] == PHI
    assert details["trainingData"]["uri"] == (
        f"azureml://datastores/workspaceblobstore/paths/{train_path}"
    )
    assert details["validationData"]["uri"] == (
        f"azureml://datastores/workspaceblobstore/paths/{validation_path}"
    )
    assert details["hyperParameters"] == dict(request_.hyperparameters)
    container = azure_fake.state.workspace.container
    stored = azure_fake.blobs()
    assert stored[f"{container}/{train_path}"].data == request_.training_file.read_bytes()
    assert stored[f"{container}/{validation_path}"].data == request_.validation_file.read_bytes()
    assert stored[f"{container}/{train_path}"].metadata["upload_status"] == "completed"
    assert "job.put" in azure_fake.api_versions()  # recorded, not checked
    assert azure_fake.refused == []


def test_retry_after_a_failed_put_reuses_the_uploads(
    azure_fake: AzureFake, client: FoundryClient, request_: FineTuningRequest
) -> None:
    azure_fake.inject("job.put", Fault.server_error(503))
    with pytest.raises(BackendUnavailable):
        client.submit_finetuning_job(request_)

    job = client.submit_finetuning_job(request_)

    assert job.status == "NotStarted"
    assert len(azure_fake.calls("job.put")) == 2
    # One data PUT and one metadata PUT per file, all from the first attempt: the
    # retry's HEAD found the content-addressed blob complete and skipped the upload.
    assert _blob_puts(azure_fake, request_.training_file) == ["data", "metadata"]
    assert _blob_puts(azure_fake, request_.validation_file) == ["data", "metadata"]
    assert len(azure_fake.state.jobs) == 1


def test_upload_racing_another_submission_is_retried_not_rejected(
    azure_fake: AzureFake, client: FoundryClient, request_: FineTuningRequest
) -> None:
    # Another job with the same data uploaded the same content-addressed blob between
    # our HEAD and our PUT (If-None-Match: *): storage answers 409.
    azure_fake.inject(
        "blob.put", Fault(409, "BlobAlreadyExists", "The specified blob already exists.")
    )
    with pytest.raises(BackendUnavailable) as raised:
        client.submit_finetuning_job(request_)
    assert not isinstance(raised.value, BackendRejected)
    assert not azure_fake.state.jobs

    job = client.submit_finetuning_job(request_)
    assert job.status == "NotStarted"
    assert len(azure_fake.state.jobs) == 1


def test_lost_put_response_is_adopted_without_a_second_submission(
    azure_fake: AzureFake, client: FoundryClient, request_: FineTuningRequest
) -> None:
    azure_fake.inject("job.put", Fault.reset(after=True))  # Azure created it; we never heard
    with pytest.raises(BackendUnavailable):
        client.submit_finetuning_job(request_)
    uploads = len(azure_fake.calls("blob.put"))

    job = client.submit_finetuning_job(request_)

    assert (job.name, job.adopted) == (request_.name, True)
    assert [r.status for r in azure_fake.calls("job.put")] == [0]
    assert len(azure_fake.calls("blob.put")) == uploads
    assert list(azure_fake.state.jobs) == [request_.name]


def test_name_taken_between_get_and_put_is_adopted_when_ours(
    azure_fake: AzureFake, client: FoundryClient, request_: FineTuningRequest
) -> None:
    client.submit_finetuning_job(request_)  # the other replica's submission
    # Our GET runs before the other replica's PUT lands; our PUT then loses the race.
    azure_fake.inject("job.get", Fault.not_found())
    mine = FineTuningRequest(**{**request_.__dict__, "hyperparameters": {"n_epochs": "4"}})

    job = client.submit_finetuning_job(mine)

    assert job.adopted
    assert [r.status for r in azure_fake.calls("job.put")] == [201, 400]
    hyper = azure_fake.job(request_.name).body["properties"]["fineTuningDetails"]
    assert hyper["hyperParameters"]["n_epochs"] == "3"  # the first submission stands


def test_name_taken_by_another_owner_is_rejected(
    azure_fake: AzureFake, client: FoundryClient, request_: FineTuningRequest
) -> None:
    client.submit_finetuning_job(request_)
    stranger = FineTuningRequest(**{**request_.__dict__, "owner": "uid-someone-else"})

    with pytest.raises(JobNameConflict, match="not ours"):
        client.submit_finetuning_job(stranger)
    assert len(azure_fake.calls("job.put")) == 1


# --- job states ---------------------------------------------------------------


def test_job_advances_through_its_states_and_registers_the_model(
    azure_fake: AzureFake, client: FoundryClient, request_: FineTuningRequest
) -> None:
    azure_fake.state.auto_advance = False
    client.submit_finetuning_job(request_)
    seen = [client.get_job(request_.name).status]
    for _ in range(3):
        azure_fake.advance_job(request_.name)
        seen.append(client.get_job(request_.name).status)

    done = client.get_job(request_.name)
    assert seen == ["NotStarted", "Queued", "Running", "Completed"]
    assert done.terminal
    assert done.error is None
    assert (done.model_name, done.model_version) == ("xbox-support", "1")
    assert request_.name in (done.portal_url or "")
    assert "1" in azure_fake.state.models["xbox-support"]


def test_job_advances_on_each_get_by_itself(
    azure_fake: AzureFake, client: FoundryClient, request_: FineTuningRequest
) -> None:
    client.submit_finetuning_job(request_)
    statuses = [client.get_job(request_.name).status for _ in range(3)]
    assert statuses[-1] == "Completed"
    assert len(set(statuses)) > 1


def test_failed_job_carries_azures_message(
    azure_fake: AzureFake, client: FoundryClient, request_: FineTuningRequest
) -> None:
    client.submit_finetuning_job(request_)
    azure_fake.set_job_outcome(request_.name, "Failed", "Line 3 of the training data is not JSON.")
    azure_fake.advance_job(request_.name, to="Failed")

    job = client.get_job(request_.name)

    assert (job.status, job.terminal) == ("Failed", True)
    assert job.error == "Line 3 of the training data is not JSON."
    assert job.model_name is None


def test_cancel_job(
    azure_fake: AzureFake, client: FoundryClient, request_: FineTuningRequest
) -> None:
    azure_fake.state.auto_advance = False
    client.submit_finetuning_job(request_)

    client.cancel_job(request_.name)

    assert client.get_job(request_.name).status == "CancelRequested"
    azure_fake.advance_job(request_.name)
    assert client.get_job(request_.name).status == "Canceled"
    assert len(azure_fake.calls("job.cancel")) == 1
    client.cancel_job("no-such-job")  # already gone counts as done


def test_missing_job_is_not_found(client: FoundryClient) -> None:
    with pytest.raises(AzureNotFound):
        client.get_job("no-such-job")


# --- workspace and region ------------------------------------------------------


def test_workspace_gives_region_and_id(azure_fake: AzureFake, client: FoundryClient) -> None:
    ws = client.get_workspace()
    assert (ws.location, ws.workspace_id) == ("eastus2", azure_fake.state.workspace.workspace_id)
    assert ws.resource_id == azure_fake.state.workspace.arm_id
    check_region(PHI, ws.location)


@pytest.mark.parametrize(
    ("model_id", "location", "ok"),
    [
        pytest.param(PHI, "eastus2", True, id="phi3-eastus2"),
        pytest.param(PHI, "East US 2", True, id="display-name"),
        pytest.param(PHI, "westus3", False, id="phi3-elsewhere"),
        pytest.param(PHI.replace("mini-4k", "medium-128k"), "swedencentral", False, id="medium"),
        pytest.param(LLAMA, "westus3", True, id="not-restricted-here"),
    ],
)
def test_check_region(model_id: str, location: str, ok: bool) -> None:
    if ok:
        check_region(model_id, location)
    else:
        with pytest.raises(RegionNotSupported, match="only in eastus2"):
            check_region(model_id, location)


# --- endpoints and models ---------------------------------------------------------


def _completed_model(
    fake: AzureFake, client: FoundryClient, req: FineTuningRequest
) -> tuple[str, str, str]:
    client.submit_finetuning_job(req)
    fake.advance_job(req.name, to="Completed")
    job = client.get_job(req.name)
    assert job.model_name
    assert job.model_version
    model_id = serverless_model_id(client.get_workspace(), job.model_name, job.model_version)
    return job.model_name, job.model_version, model_id


def test_endpoint_lifecycle_and_keys(
    azure_fake: AzureFake, client: FoundryClient, request_: FineTuningRequest
) -> None:
    _, _, model_id = _completed_model(azure_fake, client, request_)

    created = client.create_endpoint("xbox-ep", model_id, location="eastus2", base_model_id=PHI)

    assert created.provisioning_state == "Succeeded"
    assert created.model_id == model_id
    assert azure_fake.calls("marketplace.put") == []  # Phi is Microsoft's: no offer
    [put] = azure_fake.calls("endpoint.put")
    assert put.json()["properties"]["modelSettings"]["modelId"] == model_id
    assert put.json()["sku"] == {"name": "Consumption"}
    got = client.get_endpoint("xbox-ep")
    assert got is not None
    assert got.scoring_uri == created.scoring_uri
    keys = client.get_endpoint_keys("xbox-ep")
    assert keys.primary == azure_fake.state.endpoints["xbox-ep"].keys[0]
    assert keys.primary not in repr(keys)
    answer = requests.post(
        f"{got.scoring_uri}/v1/chat/completions",
        headers={"Authorization": keys.primary},
        json={"messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text

    assert client.delete_endpoint("xbox-ep") is True
    assert client.get_endpoint("xbox-ep") is None
    assert client.delete_endpoint("xbox-ep") is True  # 404 counts as done


def test_endpoint_provisioning_is_polled_not_waited_for(
    azure_fake: AzureFake, client: FoundryClient, request_: FineTuningRequest
) -> None:
    _, _, model_id = _completed_model(azure_fake, client, request_)
    azure_fake.state.endpoint_provisioning_gets = 1
    azure_fake.state.endpoint_delete_async = False

    assert client.create_endpoint("ep", model_id, location="eastus2").provisioning_state == (
        "Creating"
    )
    states = [getattr(client.get_endpoint("ep"), "provisioning_state", None) for _ in range(2)]
    assert states == ["Creating", "Succeeded"]
    assert client.delete_endpoint("ep") is True
    assert [r.status for r in azure_fake.calls("endpoint.delete")] == [204]


def test_marketplace_subscription_only_where_the_model_needs_one(
    azure_fake: AzureFake, client: FoundryClient
) -> None:
    base = LLAMA.split("/versions/")[0]

    client.create_endpoint("llama-ep", base, location="eastus2")

    [sub] = azure_fake.calls("marketplace.put")
    assert sub.json()["properties"]["modelId"] == base
    assert sub.path.endswith("/marketplaceSubscriptions/meta-llama-3-1-8b-instruct")
    assert [r.status for r in azure_fake.calls("endpoint.put")] == [201]


@pytest.mark.parametrize(
    ("model_id", "needs"),
    [
        (PHI, False),
        (LLAMA, True),
        ("azureml://locations/x/workspaces/y/models/m/versions/1", False),
    ],
)
def test_needs_marketplace_subscription(model_id: str, needs: bool) -> None:
    assert needs_marketplace_subscription(model_id) is needs


def test_model_delete_is_refused_while_an_endpoint_uses_it(
    azure_fake: AzureFake, client: FoundryClient, request_: FineTuningRequest
) -> None:
    name, version, model_id = _completed_model(azure_fake, client, request_)
    assert client.ml.models.get(name, version).job_name == request_.name  # the fake's model
    assert [m.version for m in client.ml.models.list(name)] == [version]  # routes, via the SDK
    client.create_endpoint("xbox-ep", model_id, location="eastus2")

    assert client.endpoints_using(name, version) == ["xbox-ep"]
    with pytest.raises(ModelInUse, match="xbox-ep") as refused:
        client.delete_model_version(name, version)
    assert isinstance(refused.value, BackendUnavailable)  # retried, not fatal

    assert client.delete_endpoint("xbox-ep")
    assert client.endpoints_using(name, version) == []
    assert client.delete_model_version(name, version) is True
    assert name not in azure_fake.state.models
    assert client.delete_model_version(name, version) is True  # already gone


# --- faults -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "delay"),
    [
        pytest.param(Fault.throttle(retry_after=7), BackendUnavailable, 7.0, id="429"),
        pytest.param(Fault.server_error(500), BackendUnavailable, 30.0, id="500"),
        pytest.param(Fault.server_error(503, retry_after=3), BackendUnavailable, 3.0, id="503"),
        pytest.param(Fault.reset(), BackendUnavailable, 30.0, id="reset"),
        pytest.param(Fault.unauthorized(), AzureAuthFailed, None, id="401"),
        pytest.param(Fault.forbidden(), AzureAuthFailed, None, id="403"),
        pytest.param(Fault.not_found(), AzureNotFound, None, id="404"),
        pytest.param(Fault(400, "UserError", "Bad request."), BackendRejected, None, id="400"),
    ],
)
def test_faults_map_to_kubetune_errors(
    azure_fake: AzureFake,
    client: FoundryClient,
    fault: Fault,
    error: type[Exception],
    delay: float | None,
) -> None:
    azure_fake.inject("workspace.get", fault)

    with pytest.raises(error) as raised:
        client.get_workspace()

    if delay is not None:
        assert isinstance(raised.value, BackendUnavailable)
        assert raised.value.retry_after == delay
    else:
        assert isinstance(raised.value, BackendRejected)
    if fault.status in (401, 403):
        assert ROLE in str(raised.value)
        assert fault.code in str(raised.value)
    assert len(azure_fake.calls("workspace.get")) == 1  # no hidden SDK retries
    assert client.get_workspace().location == "eastus2"  # the next call goes through


def test_throttled_submit_honours_retry_after(
    azure_fake: AzureFake, client: FoundryClient, request_: FineTuningRequest
) -> None:
    azure_fake.inject("job.put", Fault.throttle(retry_after=42))
    with pytest.raises(BackendUnavailable) as raised:
        client.submit_finetuning_job(request_)
    assert raised.value.retry_after == 42.0


def test_forbidden_submit_names_the_role(
    azure_fake: AzureFake, client: FoundryClient, request_: FineTuningRequest
) -> None:
    azure_fake.inject("job.put", Fault.forbidden())
    with pytest.raises(AzureAuthFailed) as raised:
        client.submit_finetuning_job(request_)
    assert f"it needs {ROLE} (kubetune-rg)" in str(raised.value)


def test_wrong_client_secret_is_an_auth_failure(azure_fake: AzureFake) -> None:
    azure_fake.state.client_secrets["fake-client"] = "the-right-secret"
    credential = build_credential(
        ServicePrincipal("fake-tenant", "fake-client", SECRET), authority=azure_fake.base_url
    )
    client = connect(workspace_ref(azure_fake), credential, cloud=fake_cloud(azure_fake))

    with pytest.raises(AzureAuthFailed, match=ROLE) as raised:
        client.get_workspace()
    assert SECRET not in str(raised.value)
    assert azure_fake.calls("workspace.get") == []


@pytest.mark.parametrize(
    ("headers", "want"),
    [
        ({"Retry-After": "12"}, 12.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"x-ms-retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], want: float | None) -> None:
    assert retry_after(headers) == want


def test_redact_removes_sas() -> None:
    url = "https://a.blob.core.windows.net/c/x?sv=2023-11-03&se=2030&sp=r&sig=abc%2Fdef"
    assert (
        redact(url)
        == "https://a.blob.core.windows.net/c/x?sv=REDACTED&se=REDACTED&sp=REDACTED&sig=REDACTED"
    )


# --- credentials and wiring ------------------------------------------------------------


def test_workload_identity_with_env_only_wiring(
    azure_fake: AzureFake, workload_identity: WorkloadIdentity
) -> None:
    """What the operator's pod does: no code-level cloud override, only the environment."""
    client = connect(workspace_ref(azure_fake), build_credential())

    assert client.get_workspace().location == "eastus2"

    [token] = azure_fake.calls("token")
    form = token.form()
    assert token.path == f"/{workload_identity.tenant_id}/oauth2/v2.0/token"
    assert form["client_id"] == workload_identity.client_id
    assert form["client_assertion"] == workload_identity.token_file.read_text()
    assert form["client_assertion_type"].endswith("jwt-bearer")
    assert form["scope"] == f"{azure_fake.base_url}/.default"
    # The cloud came from ARM_CLOUD_METADATA_URL (which the SDK re-reads on every lookup).
    assert azure_fake.calls("metadata")
    [ws] = azure_fake.calls("workspace.get")
    assert ws.headers["authorization"].removeprefix("Bearer ") in azure_fake.state.tokens


def test_no_credentials_is_an_auth_failure_that_never_leaves_loopback(
    azure_fake: AzureFake,
) -> None:
    client = connect(workspace_ref(azure_fake), build_credential(), cloud=fake_cloud(azure_fake))

    with pytest.raises(AzureAuthFailed, match="DefaultAzureCredential failed"):
        client.get_workspace()
    # Managed identity's probe of the instance metadata service ended at the fake's proxy.
    assert azure_fake.refused
    assert all("169.254.169.254" in target for target in azure_fake.refused)
    assert azure_fake.requests == []


def test_the_proxy_refuses_anything_outside_the_fake(azure_fake: AzureFake) -> None:
    with pytest.raises(requests.exceptions.ProxyError):
        requests.get("https://management.azure.com/", timeout=10)
    assert azure_fake.refused == ["CONNECT management.azure.com:443"]


def test_no_secret_reaches_the_logs(
    azure_fake: AzureFake,
    client: FoundryClient,
    request_: FineTuningRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Everything at INFO (the operator's level), kubetune's own loggers at DEBUG. urllib3
    # logs whole URLs, SAS included, at DEBUG: the operator must never run it there.
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="kubetune")
    _, _, model_id = _completed_model(azure_fake, client, request_)
    client.create_endpoint("ep", model_id, location="eastus2")
    keys = client.get_endpoint_keys("ep")
    sig = azure_fake.state.workspace.sas_token.rsplit("sig=", 1)[1]

    text = caplog.text + "".join(repr(r.args) for r in caplog.records)
    for secret in (SECRET, keys.primary, keys.secondary, sig):
        assert secret not in text


# --- metrics ---------------------------------------------------------------------


def _azure_requests(operation: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "kubetune_azure_requests_total", {"operation": operation, "code": code}
    )
    return value or 0.0


def test_every_azure_request_is_counted_by_operation_and_code(
    azure_fake: AzureFake, client: FoundryClient
) -> None:
    before_ok = _azure_requests("GET workspace", "200")
    before_missing = _azure_requests("GET jobs", "404")
    client.get_workspace()
    with pytest.raises(AzureNotFound):
        client.get_job("no-such-job")
    assert _azure_requests("GET workspace", "200") == before_ok + 1
    # jobs.get makes more than one request; each 404 is counted.
    assert _azure_requests("GET jobs", "404") > before_missing


@pytest.mark.parametrize(
    ("method", "url", "want"),
    [
        (
            "get",
            f"https://h/subscriptions/s/resourceGroups/r/providers/{MLS}/workspaces/w",
            "GET workspace",
        ),
        (
            "PUT",
            f"https://h/subscriptions/s/resourceGroups/r/providers/{MLS}/workspaces/w/jobs/j?api-version=1",
            "PUT jobs",
        ),
        (
            "POST",
            f"https://h/subscriptions/s/resourceGroups/r/providers/{MLS}/workspaces/w/jobs/j/cancel",
            "POST jobs/cancel",
        ),
        (
            "DELETE",
            f"https://h/subscriptions/s/resourceGroups/r/providers/{MLS}/workspaces/w/models/m/versions/3",
            "DELETE models/versions",
        ),
        (
            "GET",
            f"https://h/history/v1.0/subscriptions/s/resourceGroups/r/providers/{MLS}/workspaces/w/experimentids/x/runs/j",
            "GET experimentids/runs",
        ),
    ],
)
def test_operation_names_drop_resource_names(method: str, url: str, want: str) -> None:
    assert operation_of(method, url) == want
