"""A small typed wrapper around azure-ai-ml's `MLClient`: the calls the Foundry backend makes.

Everything here blocks (the SDK does); the backend runs it with `asyncio.to_thread`. It
connects to a workspace, reads its region, submits a serverless fine-tuning job under a
deterministic name (uploading the data content-addressed, and adopting a job that already
has that name and our owner tag), reads and cancels jobs, manages serverless endpoints
(with a marketplace subscription only for models that need one) and their keys, deletes
model versions, and turns every SDK failure into an error of the tree in the package's
docstring (`azure_errors`).

It does not retry (`connect` turns the SDK's retries off, so Retry-After reaches the
caller and every attempt is visible), wait for long-running operations (callers poll
`get_*`), validate training data, or touch Kubernetes. It never logs credentials, keys or
SAS URLs, and strips SAS parameters from error messages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from enum import Enum
from typing import Any
from urllib.parse import urlparse

from azure.ai.ml import MLClient
from azure.ai.ml.entities import Job, MarketplaceSubscription, ServerlessEndpoint
from azure.ai.ml.exceptions import MlException
from azure.ai.ml.finetuning import create_finetuning_job
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import PipelineResponse
from azure.identity import (
    ClientSecretCredential,
    DefaultAzureCredential,
    WorkloadIdentityCredential,
)
from azure.storage.blob import BlobClient

from kubetune.backends.foundry import (
    OWNER_TAG,
    ROLE,
    AzureAuthFailed,
    AzureNotFound,
    Cloud,
    EndpointInfo,
    EndpointKeys,
    FineTuningRequest,
    JobInfo,
    JobNameConflict,
    ModelInUse,
    ServicePrincipal,
    WorkspaceInfo,
    WorkspaceRef,
    needs_marketplace_subscription,
    operation_of,
    redact,
    registry_model,
    retry_after,
)
from kubetune.errors import BackendRejected, BackendUnavailable
from kubetune.metrics import AZURE_REQUESTS

log = logging.getLogger(__name__)

KNOWN_AUTHORITIES = frozenset(
    {"login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn"}
)
UNAVAILABLE_DELAY = 30.0  # seconds, when Azure is unreachable or sends no Retry-After


def _described(e: HttpResponseError) -> str:
    error = e.error
    code, message = getattr(error, "code", None), getattr(error, "message", None)
    return redact(f"{e.status_code} {code or ''}: {message or e.reason or e.message}")


def _auth_failed(what: str, e: HttpResponseError, ref: WorkspaceRef | None) -> AzureAuthFailed:
    hint = "the identity lacks permission" if e.status_code == 403 else "check the credentials"
    detail = _described(e) if e.status_code else redact(e.message)
    scope = f" ({ref.resource_group})" if ref else ""
    return AzureAuthFailed(f"{what}: Azure refused ({detail}); {hint}: it needs {ROLE}{scope}")


@contextlib.contextmanager
def azure_errors(what: str, ref: WorkspaceRef | None = None) -> Iterator[None]:
    """Translate SDK exceptions raised inside into the error tree of the package docstring."""
    try:
        yield
    except ClientAuthenticationError as e:
        # Token failures come as this too; an unreachable or failing AAD is an outage.
        cause = e.__cause__ or e.__context__
        if isinstance(cause, (ServiceRequestError, ServiceResponseError)) or (
            e.status_code is not None and (e.status_code >= 500 or e.status_code == 429)
        ):
            raise BackendUnavailable(
                f"{what}: cannot get an Azure token: {redact(str(e))}",
                retry_after=UNAVAILABLE_DELAY,
            ) from e
        raise _auth_failed(what, e, ref) from e
    except HttpResponseError as e:
        status = e.status_code or 0
        if status in (401, 403):
            raise _auth_failed(what, e, ref) from e
        if status in (408, 429) or status >= 500:
            delay = retry_after(dict(getattr(e.response, "headers", None) or {}))
            raise BackendUnavailable(
                f"{what}: Azure answered {_described(e)}",
                retry_after=UNAVAILABLE_DELAY if delay is None else delay,
            ) from e
        if status == 404:
            raise AzureNotFound(f"{what}: {_described(e)}") from e
        raise BackendRejected(f"{what}: Azure answered {_described(e)}") from e
    except (ServiceRequestError, ServiceResponseError) as e:
        raise BackendUnavailable(
            f"{what}: cannot reach Azure: {redact(str(e))}", retry_after=UNAVAILABLE_DELAY
        ) from e
    except MlException as e:
        raise BackendRejected(f"{what}: {redact(str(e))}") from e


def _status(e: BaseException) -> int | None:
    """The HTTP status behind a translated error."""
    cause = e.__cause__
    return cause.status_code if isinstance(cause, HttpResponseError) else None


def _text(value: object) -> str:
    return str(value.value) if isinstance(value, Enum) else str(value)


# --- credentials and connection --------------------------------------------------------


def build_credential(
    sp: ServicePrincipal | None = None, *, authority: str | None = None
) -> TokenCredential:
    """Workload Identity (or the rest of the default chain) unless a service principal is given.

    `authority` defaults to AZURE_AUTHORITY_HOST; instance discovery (a call to
    login.microsoftonline.com) is turned off for authorities that discovery doesn't know.
    """
    host = urlparse(authority or os.environ.get("AZURE_AUTHORITY_HOST", "")).hostname
    custom = host is not None and host not in KNOWN_AUTHORITIES
    if sp is not None:
        return ClientSecretCredential(
            sp.tenant_id,
            sp.client_id,
            sp.client_secret,
            authority=authority,
            disable_instance_discovery=custom,
        )
    if os.environ.get("AZURE_FEDERATED_TOKEN_FILE"):
        return WorkloadIdentityCredential(authority=authority)
    return DefaultAzureCredential(authority=authority, disable_instance_discovery=custom)


def connect(
    ref: WorkspaceRef, credential: TokenCredential, *, cloud: Cloud | None = None, retries: int = 0
) -> FoundryClient:
    """An `MLClient` for one workspace; `cloud` overrides its endpoints (tests, other clouds)."""
    kwargs: dict[str, Any] = {"show_progress": False, "enable_telemetry": False}
    kwargs["retry_total"] = retries
    kwargs["raw_response_hook"] = _count_request
    if cloud is not None:
        kwargs.update(cloud=cloud.name, cloud_metadata=dict(cloud.metadata))
    with azure_errors("connect", ref):
        ml = MLClient(credential, ref.subscription_id, ref.resource_group, ref.name, **kwargs)
    return FoundryClient(ml, ref)


def _count_request(response: PipelineResponse[Any, Any]) -> None:
    """azure-core calls this with every response of MLClient's pipelines: /metrics."""
    request = response.http_request
    AZURE_REQUESTS.labels(
        operation_of(request.method, request.url), str(response.http_response.status_code)
    ).inc()


class FoundryClient:
    """The SDK calls of the Foundry backend, for one workspace."""

    def __init__(self, ml: MLClient, ref: WorkspaceRef) -> None:
        self.ml = ml
        self.ref = ref

    def get_workspace(self) -> WorkspaceInfo:
        with azure_errors("get workspace", self.ref):
            ws = self.ml.workspaces.get(self.ref.name)
        return WorkspaceInfo(
            name=str(ws.name),
            location=str(ws.location),
            workspace_id=str(ws._workspace_id),  # the SDK has no public accessor
            resource_id=str(ws.id),
        )

    # --- fine-tuning jobs ---------------------------------------------------------------
    def submit_finetuning_job(self, req: FineTuningRequest) -> JobInfo:
        """Create the job, or adopt the one that already has its name and our owner tag.

        A GET comes first, so a retry after a lost response (or an operator restart) never
        uploads or submits twice; if another writer wins the race between that GET and our
        PUT, the PUT's "already exists" leads to the same adoption check.
        """
        existing = self._find_job(req)
        if existing is not None:
            return existing
        job = create_finetuning_job(
            model=req.model_id,
            task=req.task,
            training_data=str(req.training_file),
            validation_data=str(req.validation_file),
            output_model_name_prefix=req.output_model_prefix,
            hyperparameters={k: str(v) for k, v in req.hyperparameters.items()},
            name=req.name,
            display_name=req.name,
            experiment_name=req.experiment_name,
            tags={OWNER_TAG: req.owner},
        )
        try:
            with azure_errors(f"submit job {req.name}", self.ref):
                created = self.ml.jobs.create_or_update(job)
        except BackendRejected as e:
            if _status(e) != 409 and "already exists" not in str(e).lower():
                raise
            adopted = self._find_job(req)
            if adopted is None:
                # No job: the conflict was an upload racing another submission of the same
                # content-addressed file. A retry finds the blob there and skips it.
                raise BackendUnavailable(f"{e}; retrying", retry_after=2) from e
            return adopted
        log.info("submitted azure job name=%s", req.name)
        return self._job_info(created)

    def _find_job(self, req: FineTuningRequest) -> JobInfo | None:
        try:
            with azure_errors(f"get job {req.name}", self.ref):
                job = self.ml.jobs.get(req.name)
        except AzureNotFound:
            return None
        owner = (job.tags or {}).get(OWNER_TAG)
        if owner != req.owner:
            raise JobNameConflict(
                f"Azure job {req.name} already exists and is not ours "
                f"({OWNER_TAG}={owner!r}, expected {req.owner!r})"
            )
        log.info("adopted existing azure job name=%s", req.name)
        return replace(self._job_info(job), adopted=True)

    def get_job(self, name: str) -> JobInfo:
        with azure_errors(f"get job {name}", self.ref):
            job = self.ml.jobs.get(name)
        return self._job_info(job)

    def _job_info(self, job: Job) -> JobInfo:
        status = _text(job.status)
        output = (getattr(job, "outputs", None) or {}).get("registered_model")
        version = getattr(output, "version", None)
        return JobInfo(
            name=str(job.name),
            status=status,
            error=self._job_error(str(job.name)) if status == "Failed" else None,
            model_name=getattr(output, "name", None) if version else None,
            model_version=str(version) if version else None,
            portal_url=job.studio_url,
        )

    def _job_error(self, name: str) -> str:
        """Azure keeps a failed job's error in run history, not on the job resource."""
        try:
            with azure_errors(f"get run {name}", self.ref):
                run = self.ml.jobs._runs_operations.get_run(name)
        except BackendRejected as e:
            return f"Azure job failed (its error could not be read: {e})"
        error = getattr(getattr(run, "error", None), "error", None)
        return str(getattr(error, "message", None) or "Azure job failed without a message")

    def cancel_job(self, name: str) -> None:
        """Ask Azure to cancel and return at once (poll `get_job`); a missing job is done."""
        with contextlib.suppress(AzureNotFound), azure_errors(f"cancel job {name}", self.ref):
            self.ml.jobs.begin_cancel(name, polling=False)

    # --- serverless endpoints -------------------------------------------------------------
    def create_endpoint(
        self, name: str, model_id: str, *, location: str, base_model_id: str | None = None
    ) -> EndpointInfo:
        """PUT the endpoint and return at once (poll `get_endpoint` until it has provisioned).

        `base_model_id` is the registry model the deployed one derives from; a marketplace
        subscription to it is made first where its publisher needs one (never Microsoft).
        Content safety stays at Azure's default for serverless endpoints, which is on: the
        SDK's entity cannot set it.
        """
        offer = base_model_id or model_id
        if needs_marketplace_subscription(offer):
            self._subscribe(offer)
        endpoint = ServerlessEndpoint(name=name, model_id=model_id)
        endpoint.location = location  # not a constructor keyword; saves the SDK a GET
        with azure_errors(f"create endpoint {name}", self.ref):
            poller = self.ml.serverless_endpoints.begin_create_or_update(endpoint, polling=False)
            return _endpoint_info(poller.result())

    def _subscribe(self, model_id: str) -> None:
        unversioned = model_id.split("/versions/")[0]
        model = (registry_model(unversioned) or ("", unversioned))[1]
        name = re.sub(r"[^a-z0-9-]", "-", model.lower())[:50]
        subscription = MarketplaceSubscription(name=name, model_id=unversioned)
        with azure_errors(f"subscribe to {unversioned}", self.ref):
            ops = self.ml.marketplace_subscriptions
            done = ops.begin_create_or_update(subscription, polling=False).result()
        state = _text(done.provisioning_state or "").lower()
        if state != "succeeded":
            raise BackendUnavailable(f"marketplace subscription {name} is {state}", retry_after=15)

    def get_endpoint(self, name: str) -> EndpointInfo | None:
        """The endpoint, or None when Azure has none by that name (deleted, or idle-removed)."""
        try:
            with azure_errors(f"get endpoint {name}", self.ref):
                return _endpoint_info(self.ml.serverless_endpoints.get(name))
        except AzureNotFound:
            return None

    def get_endpoint_keys(self, name: str) -> EndpointKeys:
        with azure_errors(f"get keys of endpoint {name}", self.ref):
            keys = self.ml.serverless_endpoints.get_keys(name)
        return EndpointKeys(primary=str(keys.primary_key), secondary=str(keys.secondary_key))

    def delete_endpoint(self, name: str) -> bool:
        """Start deleting; True once the endpoint is gone (404 counts as done)."""
        try:
            with azure_errors(f"delete endpoint {name}", self.ref):
                self.ml.serverless_endpoints.begin_delete(name, polling=False)
        except AzureNotFound:
            return True
        return self.get_endpoint(name) is None

    def endpoints_using(self, model_name: str, version: str) -> list[str]:
        """Names of the workspace's serverless endpoints that serve this model version."""
        suffix = f"/models/{model_name}/versions/{version}".lower()
        with azure_errors("list endpoints", self.ref):
            endpoints = list(self.ml.serverless_endpoints.list())
        return sorted(str(e.name) for e in endpoints if str(e.model_id).lower().endswith(suffix))

    # --- models ---------------------------------------------------------------------------
    def delete_model_version(self, name: str, version: str) -> bool:
        """Delete a registered model version; True when deleted or already gone.

        The public `ModelOperations` can only archive, so this takes the SDK's internal
        `_model_versions_operation`. Azure's refusal while a deployment uses the version
        (409, or a 400 saying so) raises ModelInUse, which callers retry.
        """
        try:
            with azure_errors(f"delete model {name}:{version}", self.ref):
                self.ml.models._model_versions_operation.delete(
                    resource_group_name=self.ref.resource_group,
                    workspace_name=self.ref.name,
                    name=name,
                    version=version,
                )
        except AzureNotFound:
            return True
        except BackendRejected as e:
            status = _status(e)
            if status == 409 or (status == 400 and "deploy" in str(e).lower()):
                raise ModelInUse(f"model {name}:{version} is in use on Azure: {e}") from e
            raise
        return True


def _endpoint_info(ep: ServerlessEndpoint) -> EndpointInfo:
    # The SDK snake-cases Azure's state ("succeeded"); give back Azure's own spelling.
    state = _text(ep.provisioning_state or "unknown")
    return EndpointInfo(
        name=str(ep.name),
        model_id=str(ep.model_id),
        provisioning_state="".join(part.capitalize() for part in state.split("_")),
        scoring_uri=ep.scoring_uri,
        resource_id=ep.id,
    )


def read_blob(
    account_url: str, container: str, blob: str, credential: str | TokenCredential
) -> bytes:
    """A blob's content, with a SAS token or an Azure identity (storage data reader role)."""
    with azure_errors(f"read blob {container}/{blob}"):
        client = BlobClient(account_url, container, blob, credential=credential)
        data: bytes = client.download_blob().readall()
    return data
