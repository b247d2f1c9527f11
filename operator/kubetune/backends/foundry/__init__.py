"""The Azure AI Foundry backend: its types, errors and pure helpers.

This module needs nothing beyond kubetune: import it freely. The SDK calls live in
`kubetune.backends.foundry.client`, which needs azure-ai-ml and azure-identity (the
`foundry` extra) and is slow to import. Errors, added to kubetune.errors' tree:

    BackendUnavailable(retry_after)  429 (its Retry-After), 408, 5xx, connection errors
    └─ ModelInUse                    a model version a deployment still uses (409)
    BackendRejected                  any other 4xx, and the SDK's own validation errors
    ├─ AzureAuthFailed               401/403 and credential failures, naming the role
    ├─ AzureNotFound                 404 where absence is an error
    ├─ JobNameConflict               the job name is taken by a job that is not ours
    └─ RegionNotSupported            the workspace's region can't fine-tune the model
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from kubetune.errors import BackendRejected, BackendUnavailable

ROLE = "Azure AI Developer on the resource group"
OWNER_TAG = "kubetune.owner"  # dots, like azureml.* run tags
TERMINAL = frozenset({"Completed", "Failed", "Canceled", "NotResponding", "Paused"})
# Models whose serverless fine-tuning Azure offers in some regions only (lower-case names).
FINETUNE_REGIONS: Mapping[str, frozenset[str]] = {
    f"phi-3-{size}-instruct": frozenset({"eastus2"})
    for size in ("mini-4k", "mini-128k", "medium-4k", "medium-128k")
}
MICROSOFT_REGISTRY = "azureml"  # Microsoft's own models (Phi): no marketplace offer
_SAS = re.compile(r"\b(sig|se|st|sp|sv|skoid|sktid)=[^&\s'\"]+")


class AzureAuthFailed(BackendRejected):
    """Azure refused our credentials or their permissions (401/403, token failures)."""


class AzureNotFound(BackendRejected):
    """The workspace (or another resource the call needs) does not exist."""


class JobNameConflict(BackendRejected):
    """A job with our deterministic name exists, but another owner created it."""


class RegionNotSupported(BackendRejected):
    """The workspace's region cannot fine-tune the requested model serverlessly."""


class ModelInUse(BackendUnavailable):
    """Azure refused to delete a model version that a deployment still uses."""

    def __init__(self, message: str, *, retry_after: float = 60.0) -> None:
        super().__init__(message, retry_after=retry_after)


@dataclass(frozen=True)
class WorkspaceRef:
    subscription_id: str
    resource_group: str
    name: str


@dataclass(frozen=True)
class Cloud:
    """A cloud other than Azure public (sovereign, or the test fake): MLClient's six URLs."""

    name: str
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class ServicePrincipal:
    """Service-principal credentials, as read from the referenced Secret."""

    tenant_id: str
    client_id: str
    client_secret: str = field(repr=False)


@dataclass(frozen=True)
class WorkspaceInfo:
    name: str
    location: str
    workspace_id: str
    resource_id: str


@dataclass(frozen=True)
class FineTuningRequest:
    name: str  # deterministic Azure job name, derived from the FineTuneJob's uid
    owner: str  # the FineTuneJob's uid: tagged on the job, checked before adopting it
    model_id: str  # azureml://registries/<registry>/models/<name>/versions/<n>
    training_file: Path  # keep file names stable: the upload path is <hash>/<file name>
    validation_file: Path  # always: the SDK crashes without one (azure-sdk-for-python#45770)
    output_model_prefix: str
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    task: str = "ChatCompletion"
    experiment_name: str = "kubetune"


@dataclass(frozen=True)
class JobInfo:
    name: str
    status: str  # Azure's own status string
    error: str | None = None  # Azure's message, for Failed jobs
    model_name: str | None = None
    model_version: str | None = None
    portal_url: str | None = None
    adopted: bool = False  # submit found this job already there

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class EndpointInfo:
    name: str
    model_id: str
    provisioning_state: str  # Azure's spelling: Creating, Succeeded, Failed, Deleting...
    scoring_uri: str | None
    resource_id: str | None


@dataclass(frozen=True)
class EndpointKeys:
    primary: str = field(repr=False)
    secondary: str = field(repr=False)


# --- pure helpers ------------------------------------------------------------------


def redact(text: str) -> str:
    """Remove SAS parameters (signature, expiry, permissions) from a message."""
    return _SAS.sub(r"\1=REDACTED", text)


def registry_model(model_id: str) -> tuple[str, str] | None:
    """(registry, model name) of an azureml://registries/... id, else None."""
    parts = model_id.split("/")
    if model_id.startswith("azureml://registries/") and len(parts) >= 6 and parts[4] == "models":
        return parts[3], parts[5]
    return None


def needs_marketplace_subscription(model_id: str) -> bool:
    """Models from other publishers' registries need one; Microsoft's (Phi) have no offer."""
    found = registry_model(model_id)
    return found is not None and found[0] != MICROSOFT_REGISTRY


def check_region(model_id: str, location: str) -> None:
    """Raise RegionNotSupported before anything is uploaded, where Azure is known to refuse."""
    model = (registry_model(model_id) or ("", model_id))[1]
    allowed = FINETUNE_REGIONS.get(model.lower())
    if allowed is not None and location.lower().replace(" ", "") not in allowed:
        raise RegionNotSupported(
            f"{model} can be fine-tuned serverlessly only in {', '.join(sorted(allowed))}; "
            f"the workspace is in {location}"
        )


def serverless_model_id(ws: WorkspaceInfo, name: str, version: str) -> str:
    """The id a serverless endpoint takes for a model registered in the workspace."""
    workspace = f"azureml://locations/{ws.location}/workspaces/{ws.workspace_id}"
    return f"{workspace}/models/{name}/versions/{version}"


def operation_of(method: str, url: str) -> str:
    """A low-cardinality name for an Azure request: the method and the path's collections.

    `POST .../workspaces/ws/jobs/kubetune-1/cancel` is "POST jobs/cancel"; names of jobs,
    models and endpoints are dropped, so /metrics has one series per kind of call.
    """
    parts = [p for p in urlsplit(url).path.split("/") if p]
    lower = [p.lower() for p in parts]
    if "workspaces" in lower:
        parts = parts[lower.index("workspaces") + 2 :]
    elif "subscriptions" in lower:
        parts = parts[lower.index("subscriptions") + 2 :]
    kinds = [p for i, p in enumerate(parts) if i % 2 == 0]
    return f"{method.upper()} {'/'.join(kinds) or 'workspace'}"


def azure_job_name(uid: str) -> str:
    """The Azure job name of a FineTuneJob: a pure function of its uid, so a retry, a
    restart or a second replica always asks Azure about the same job."""
    return f"kubetune-{uid}"


def endpoint_name(namespace: str, name: str) -> str:
    """A serverless endpoint name for a ModelDeployment: Azure allows 3-32 letters, digits
    and dashes, starting with a letter, unique in the workspace, so a hash of the
    namespace and name follows a readable prefix."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:6]
    prefix = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:25] or "kubetune"
    if not prefix[0].isalpha():
        prefix = f"ep-{prefix}"[:25]
    return f"{prefix.rstrip('-')}-{digest}"


def model_version_of(model_id: str) -> tuple[str, str] | None:
    """(name, version) of an Azure model id that ends in /models/<name>/versions/<version>."""
    parts = model_id.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-4] == "models" and parts[-2] == "versions":
        return parts[-3], parts[-1]
    return None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from retry-after-ms, x-ms-retry-after-ms or Retry-After (seconds or a date)."""
    lower = {k.lower(): v for k, v in headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        with contextlib.suppress(KeyError, ValueError):
            return max(float(lower[name]) / 1000, 0.0)
    value = lower.get("retry-after")
    with contextlib.suppress(TypeError, ValueError):
        return max(float(value or ""), 0.0)
    with contextlib.suppress(TypeError, ValueError):
        return max(email.utils.parsedate_to_datetime(value or "").timestamp() - time.time(), 0.0)
    return None
