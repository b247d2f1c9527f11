"""The Azure REST routes the fake answers, as a table of (name, method, host kind, path).

Each handler takes the state and one parsed `Call` and returns a `Reply`; it runs under
the state lock, so handlers never block. Route names ("job.put", "blob.head", ...) are
what tests use to inject faults and filter recorded requests. Wire shapes follow what
azure-ai-ml 1.35 / azure-storage-blob 12 / azure-identity 1.27 parse; api-versions are
recorded, never checked. Paths match case-insensitively, as ARM's do.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from tests.azurefake.state import AzureState, Job
from tests.azurefake.wire import Call, Reply, Route, error, not_found, route

WS = (
    r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)"
    r"/providers/Microsoft\.MachineLearningServices/workspaces/(?P<ws>[^/]+)"
)


# --- workspace, discovery, datastores -----------------------------------------


def _workspace(state: AzureState, call: Call) -> Reply:
    ws = state.workspace
    if call.params["ws"].lower() != ws.name.lower():
        return not_found("Workspace", call.params["ws"])
    return Reply(
        200,
        {
            "id": ws.arm_id,
            "name": ws.name,
            "type": "Microsoft.MachineLearningServices/workspaces",
            "location": ws.location,
            "kind": "Project",
            "sku": {"name": "Basic", "tier": "Basic"},
            "identity": {"type": "SystemAssigned"},
            "tags": {},
            "properties": {
                "workspaceId": ws.workspace_id,
                "friendlyName": ws.name,
                "provisioningState": "Succeeded",
                "discoveryUrl": f"{call.base_url}/discovery",
                "hubResourceId": ws.arm_id.rsplit("/", 1)[0] + "/kubetune-hub",
            },
        },
    )


def _discovery(state: AzureState, call: Call) -> Reply:
    keys = ("api", "catalog", "experimentation", "history", "modelmanagement", "pipelines")
    return Reply(200, {key: call.base_url for key in keys})


def _datastore_body(state: AzureState) -> dict[str, Any]:
    ws = state.workspace
    return {
        "id": f"{ws.arm_id}/datastores/workspaceblobstore",
        "name": "workspaceblobstore",
        "type": "Microsoft.MachineLearningServices/workspaces/datastores",
        "properties": {
            "datastoreType": "AzureBlob",
            "accountName": ws.storage_account,
            "containerName": ws.container,
            "endpoint": state.storage_suffix,
            "protocol": "https",
            "credentials": {"credentialsType": "AccountKey"},
            "isDefault": True,
            "serviceDataAccessAuthIdentity": "None",
            "properties": {},
            "tags": {},
        },
    }


def _datastore_list(state: AzureState, call: Call) -> Reply:
    return Reply(200, {"value": [_datastore_body(state)]})


def _datastore(state: AzureState, call: Call) -> Reply:
    if call.params["name"] != "workspaceblobstore":
        return not_found("Datastore", call.params["name"])
    return Reply(200, _datastore_body(state))


def _datastore_secrets(state: AzureState, call: Call) -> Reply:
    return Reply(200, {"secretsType": "Sas", "sasToken": state.workspace.sas_token})


# --- jobs and run history -----------------------------------------------------


def _job_resource(state: AzureState, job: Job, call: Call) -> dict[str, Any]:
    ws = state.workspace
    props = copy.deepcopy(job.body.get("properties") or {})
    props["status"] = job.status
    if not isinstance(props.get("properties"), dict):
        props["properties"] = {}
    props["services"] = {
        "Studio": {
            "jobServiceType": "Studio",
            "endpoint": f"https://ml.azure.{state.storage_suffix}/runs/{job.name}?wsid={ws.arm_id}",
        },
    }
    if job.model_name:
        output = props.setdefault("outputs", {}).setdefault("registered_model", {})
        output.update(assetName=job.model_name, assetVersion=job.model_version)
    return {
        "id": f"{ws.arm_id}/jobs/{job.name}",
        "name": job.name,
        "type": "Microsoft.MachineLearningServices/workspaces/jobs",
        "properties": props,
    }


def _same_job(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Re-PUT of a job is accepted only with the same settings, as Azure does."""
    keys = ("fineTuningDetails", "outputs", "tags", "experimentName", "jobType")
    old_p, new_p = old.get("properties") or {}, new.get("properties") or {}
    return all(old_p.get(k) == new_p.get(k) for k in keys)


def _job_put(state: AzureState, call: Call) -> Reply:
    name, body = call.params["name"], call.json() or {}
    props = body.get("properties") or {}
    details = props.get("fineTuningDetails") or {}
    if props.get("jobType") == "FineTuning" and not (
        details.get("model", {}).get("uri") and details.get("trainingData", {}).get("uri")
    ):
        return error(400, "UserError", "fineTuningDetails needs a model and training data.")
    existing = state.jobs.get(name)
    if existing is not None:
        if not _same_job(existing.body, body):
            return error(400, "UserError", f"A job with this name already exists: {name}.")
        return Reply(200, _job_resource(state, existing, call))
    job = state.jobs[name] = Job(name=name, body=body)
    return Reply(201, _job_resource(state, job, call))


def _job_get(state: AzureState, call: Call) -> Reply:
    job = state.jobs.get(call.params["name"])
    if job is None:
        return not_found("Job", call.params["name"])
    job.gets += 1
    if state.auto_advance:
        state.step(job)
    return Reply(200, _job_resource(state, job, call))


def _job_list(state: AzureState, call: Call) -> Reply:
    return Reply(200, {"value": [_job_resource(state, j, call) for j in state.jobs.values()]})


def _job_cancel(state: AzureState, call: Call) -> Reply:
    if call.params["name"] not in state.jobs:
        return not_found("Job", call.params["name"])
    state.cancel_job(call.params["name"])
    return accepted(state, call)


def _run_get(state: AzureState, call: Call) -> Reply:
    job = state.jobs.get(call.params["run"])
    if job is None:
        return not_found("Run", call.params["run"])
    run: dict[str, Any] = {"runId": job.name, "status": job.status, "runType": "FineTuning"}
    if job.status == "Failed":
        run["error"] = {"error": {"code": "UserError", "message": job.error or "Job failed."}}
    return Reply(200, run)


# --- long-running operations --------------------------------------------------


def accepted(state: AzureState, call: Call) -> Reply:
    """202 + Location, the ARM shape of an operation that finishes later."""
    op = uuid.uuid4().hex
    location = f"{call.base_url}{state.workspace.arm_id}/operationResults/{op}"
    return Reply(202, None, {"Location": location})


def _operation(state: AzureState, call: Call) -> Reply:
    return Reply(200, {"status": "Succeeded"})


# --- models -------------------------------------------------------------------


def _model_resource(state: AzureState, name: str, version: str) -> dict[str, Any]:
    return {
        "id": f"{state.workspace.arm_id}/models/{name}/versions/{version}",
        "name": version,
        "type": "Microsoft.MachineLearningServices/workspaces/models/versions",
        **state.models[name][version],
    }


def _model_get(state: AzureState, call: Call) -> Reply:
    name, version = call.params["name"], call.params["version"]
    if version not in state.models.get(name, {}):
        return not_found("Model", f"{name}:{version}")
    return Reply(200, _model_resource(state, name, version))


def _model_list(state: AzureState, call: Call) -> Reply:
    name = call.params["name"]
    versions = state.models.get(name, {})
    return Reply(200, {"value": [_model_resource(state, name, v) for v in versions]})


def _model_put(state: AzureState, call: Call) -> Reply:
    name, version = call.params["name"], call.params["version"]
    state.models.setdefault(name, {})[version] = {
        "properties": (call.json() or {}).get("properties", {})
    }
    return Reply(200, _model_resource(state, name, version))


def _model_delete(state: AzureState, call: Call) -> Reply:
    name, version = call.params["name"], call.params["version"]
    if version not in state.models.get(name, {}):
        return not_found("Model", f"{name}:{version}")
    users = state.endpoints_using(name, version)
    if users:
        return error(
            409,
            "Conflict",
            f"Model {name}:{version} cannot be deleted: it is used by serverless "
            f"endpoint(s) {', '.join(users)}. Delete the deployments first.",
        )
    del state.models[name][version]
    if not state.models[name]:
        del state.models[name]
    return Reply(200)


# --- identity, cloud metadata, inference -------------------------------------


def _token(state: AzureState, call: Call) -> Reply:
    form = call.form()
    secret = state.client_secrets.get(form.get("client_id", ""))
    if form.get("client_assertion"):
        ok = bool(form["client_assertion"].strip())
    else:
        ok = bool(form.get("client_secret")) and secret in (None, form.get("client_secret"))
    if not form.get("client_id") or not ok:
        return Reply(
            401,
            {
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided.",
                "error_codes": [7000215],
            },
        )
    token = state.issue_token({"tenant": call.params["tenant"], **form})
    return Reply(
        200,
        {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token},
    )


def _openid(state: AzureState, call: Call) -> Reply:
    base = f"{call.base_url}/{call.params['tenant']}"
    return Reply(
        200,
        {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "issuer": f"{base}/v2.0",
        },
    )


def _cloud_metadata(state: AzureState, call: Call) -> Reply:
    """ARM's cloud metadata document, for `ARM_CLOUD_METADATA_URL`."""
    suffix = state.storage_suffix
    return Reply(
        200,
        [
            {
                "name": state.cloud_name,
                "portal": f"https://portal.azure.{suffix}/",
                "resourceManager": f"{call.base_url}/",
                "authentication": {"loginEndpoint": f"{call.base_url}/", "audiences": []},
                "suffixes": {"storage": suffix},
            }
        ],
    )


ROUTES: tuple[Route, ...] = (
    route("workspace.get", "GET", "arm", WS, _workspace),
    route("datastore.list", "GET", "arm", WS + "/datastores", _datastore_list),
    route("datastore.get", "GET", "arm", WS + "/datastores/(?P<name>[^/]+)", _datastore),
    route(
        "datastore.listSecrets",
        "POST",
        "arm",
        WS + "/datastores/(?P<name>[^/]+)/listSecrets",
        _datastore_secrets,
    ),
    route("job.list", "GET", "arm", WS + "/jobs", _job_list),
    route("job.put", "PUT", "arm", WS + "/jobs/(?P<name>[^/]+)", _job_put),
    route("job.get", "GET", "arm", WS + "/jobs/(?P<name>[^/]+)", _job_get),
    route("job.cancel", "POST", "arm", WS + "/jobs/(?P<name>[^/]+)/cancel", _job_cancel),
    route("operation.get", "GET", "arm", WS + "/operationResults/(?P<op>[^/]+)", _operation),
    route("model.list", "GET", "arm", WS + "/models/(?P<name>[^/]+)/versions", _model_list),
    route(
        "model.get",
        "GET",
        "arm",
        WS + "/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)",
        _model_get,
    ),
    route(
        "model.put",
        "PUT",
        "arm",
        WS + "/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)",
        _model_put,
    ),
    route(
        "model.delete",
        "DELETE",
        "arm",
        WS + "/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)",
        _model_delete,
    ),
    route("discovery.get", "GET", "arm", "/discovery", _discovery),
    route("run.get", "GET", "arm", "/history/v1.0" + WS + "/runs/(?P<run>[^/]+)", _run_get),
    route("token", "POST", "arm", "/(?P<tenant>[^/]+)/oauth2/v2.0/token", _token),
    route(
        "openid", "GET", "arm", "/(?P<tenant>[^/]+)/v2.0/.well-known/openid-configuration", _openid
    ),
    route("metadata", "GET", "arm", "/metadata/endpoints", _cloud_metadata),
)
