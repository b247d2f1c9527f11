"""What the Azure fake remembers: workspace, blobs, jobs, models, endpoints, subscriptions.

No HTTP here. Routes (routes.py) read and change this state under `AzureState.lock`;
tests read it through the same lock (the server runs in its own thread).

The job state machine: a PUT creates the job as NotStarted; each GET (when
`auto_advance` is on) or `advance_job()` moves it one step along
NotStarted -> Queued -> Running -> its outcome (Completed by default; a test can make it
Failed with a message, or Canceled). Cancel moves a live job to CancelRequested, and the
next step to Canceled. On Completed, the job's `registered_model` output gets an
assetName/assetVersion, and that model version exists.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

LIVE_PATH = ("NotStarted", "Queued", "Running")
TERMINAL = frozenset({"Completed", "Failed", "Canceled", "NotResponding", "Paused"})
MICROSOFT_REGISTRY = "azureml"  # models published by Microsoft (Phi): no marketplace offer


@dataclass(frozen=True)
class Workspace:
    subscription_id: str = "00000000-0000-0000-0000-0000000f4ce0"
    resource_group: str = "kubetune-rg"
    name: str = "kubetune-project"
    location: str = "eastus2"
    workspace_id: str = "5e7c0ffe-0000-4000-8000-00000000cafe"
    storage_account: str = "kubetunefake"
    container: str = "azureml-blobstore-5e7c0ffe"
    sas_token: str = "sv=2023-11-03&ss=b&srt=co&sp=rwdlac&sig=fake-sas-signature"

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.name}"
        )


@dataclass
class Blob:
    data: bytes
    metadata: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/octet-stream"

    @property
    def etag(self) -> str:
        return '"0x' + hashlib.sha256(self.data).hexdigest()[:16].upper() + '"'


@dataclass
class Job:
    name: str
    body: dict[str, Any]  # the PUT body, echoed back on GET
    status: str = "NotStarted"
    outcome: str = "Completed"
    error: str = ""
    model_name: str = ""
    model_version: str = ""
    gets: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass
class Endpoint:
    name: str
    body: dict[str, Any]
    provisioning_state: str = "Succeeded"
    keys: tuple[str, str] = ("", "")
    creating_gets: int = 0  # GETs left that still answer "Creating"

    @property
    def model_id(self) -> str:
        return str(self.body.get("properties", {}).get("modelSettings", {}).get("modelId", ""))


class AzureState:
    def __init__(self, workspace: Workspace, *, storage_suffix: str, cloud_name: str) -> None:
        self.lock = threading.RLock()
        self.workspace = workspace
        self.storage_suffix = storage_suffix
        self.cloud_name = cloud_name
        self.client_secrets: dict[str, str] = {}  # client id -> secret the token endpoint wants
        self.blobs: dict[str, Blob] = {}  # "container/path"
        self.blocks: dict[tuple[str, str], bytes] = {}  # staged blocks: (blob key, block id)
        self.jobs: dict[str, Job] = {}
        self.models: dict[str, dict[str, dict[str, Any]]] = {}  # name -> version -> body
        self.endpoints: dict[str, Endpoint] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, dict[str, str]] = {}  # issued access token -> the token request
        self.auto_advance = True
        self.endpoint_provisioning_gets = 0  # GETs an endpoint stays "Creating" after its PUT
        self.endpoint_delete_async = True  # DELETE answers 202 + Location (else 204)

    # --- tokens -------------------------------------------------------------
    def issue_token(self, request: dict[str, str] | None = None) -> str:
        with self.lock:
            token = f"fake-token-{uuid.uuid4().hex}"
            self.tokens[token] = dict(request or {})
            return token

    # --- jobs ---------------------------------------------------------------
    def step(self, job: Job) -> None:
        """One move of the state machine (no-op on a terminal job)."""
        if job.terminal:
            return
        if job.status == "CancelRequested":
            job.status = "Canceled"
        elif job.status == LIVE_PATH[-1]:
            job.status = job.outcome
            if job.outcome == "Completed":
                self._register_output(job)
        else:
            job.status = LIVE_PATH[LIVE_PATH.index(job.status) + 1]

    def advance_job(self, name: str, *, to: str | None = None) -> Job:
        """Step once, or until the job reaches `to` (a state on its path)."""
        with self.lock:
            job = self.jobs[name]
            if to is None:
                self.step(job)
                return job
            while job.status != to:
                if job.terminal:
                    raise AssertionError(f"job {name} ended {job.status}, never reached {to}")
                if to in TERMINAL and to != "Canceled" and job.outcome != to:
                    job.outcome = to
                self.step(job)
            return job

    def set_job_outcome(self, name: str, status: str, message: str = "") -> None:
        with self.lock:
            job = self.jobs[name]
            job.outcome, job.error = status, message

    def cancel_job(self, name: str) -> Job:
        with self.lock:
            job = self.jobs[name]
            if not job.terminal:
                job.status = "CancelRequested"
            return job

    def _register_output(self, job: Job) -> None:
        outputs = job.body.get("properties", {}).get("outputs") or {}
        output = outputs.get("registered_model") or {}
        name = output.get("assetName") or f"{job.name}-model"
        versions = self.models.setdefault(name, {})
        version = str(len(versions) + 1)
        versions[version] = {
            "properties": {
                "modelType": "custom_model",
                "modelUri": (f"azureml://jobs/{job.name}/outputs/registered_model/paths/"),
                "jobName": job.name,
                "description": f"Fine-tuned by {job.name}",
                "properties": {},
                "tags": {},
                "isArchived": False,
                "flavors": {},
            }
        }
        job.model_name, job.model_version = name, version

    # --- models and endpoints ----------------------------------------------
    def serverless_model_id(self, name: str, version: str) -> str:
        ws = self.workspace
        return (
            f"azureml://locations/{ws.location}/workspaces/{ws.workspace_id}"
            f"/models/{name}/versions/{version}"
        )

    def endpoints_using(self, name: str, version: str) -> list[str]:
        suffix = f"/models/{name}/versions/{version}".lower()
        return sorted(
            e.name for e in self.endpoints.values() if e.model_id.lower().endswith(suffix)
        )

    def needs_subscription(self, model_id: str) -> bool:
        """Registry models from a publisher other than Microsoft need a marketplace offer."""
        parts = model_id.split("/")
        return (
            model_id.startswith("azureml://registries/")
            and len(parts) > 3
            and parts[3] != MICROSOFT_REGISTRY
        )

    def has_subscription(self, model_id: str) -> bool:
        base = model_id.split("/versions/")[0].lower()
        return any(
            str(s.get("properties", {}).get("modelId", "")).lower() == base
            for s in self.subscriptions.values()
        )
