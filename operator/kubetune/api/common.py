"""Building blocks shared by kubetune's resource models.

The pydantic models in this package are the single source of truth for the CRDs:
class docstrings and field descriptions become the schema's `description`, `Field`
constraints become OpenAPI validation, and the `rules(...)` helper attaches CEL
`x-kubernetes-validations` with human-readable messages. `crdgen` turns them into
YAML. Nothing here talks to Kubernetes.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "kubetune.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# A Kubernetes object name (RFC 1123 subdomain): lower-case ASCII, digits, '-' and '.'.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
NAME_MAX_LENGTH = 253
# A ConfigMap or Secret key.
KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"


class KubeModel(BaseModel):
    """Base of every kubetune model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def rules(*pairs: tuple[str, str]) -> dict[str, Any]:
    """CEL validations as `(rule, message)` pairs, for `json_schema_extra`."""
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in pairs]}


def immutable(field: str) -> dict[str, Any]:
    """A transition rule that forbids changing a field once it is set."""
    return rules(("self == oldSelf", f"{field} is immutable; create a new resource instead"))


def exactly_one_of(*fields: str) -> tuple[str, str]:
    """A rule that exactly one of the given optional fields is set."""
    listed = ", ".join(f"has(self.{f})" for f in fields)
    return (
        f"[{listed}].filter(x, x).size() == 1",
        f"exactly one of {', '.join(fields)} must be set",
    )


class Backend(StrEnum):
    LOCAL = "local"
    FOUNDRY = "foundry"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(KubeModel):
    """The Kubernetes `metav1.Condition` shape."""

    type: str = Field(description="Type of condition in CamelCase, e.g. Accepted, Running.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="Machine-readable CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable details of the last transition.")
    last_transition_time: datetime = Field(
        description="When the condition last changed from one status to another."
    )
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the condition was set for."
    )


class ObjectReference(KubeModel):
    """A reference to an object in the same namespace."""

    name: str = Field(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=NAME_PATTERN,
        description="Name of the referenced object.",
    )


class ConfigMapKeySource(KubeModel):
    """A key of a ConfigMap in the resource's namespace."""

    name: str = Field(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=NAME_PATTERN,
        description="ConfigMap name.",
    )
    key: str = Field(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=KEY_PATTERN,
        description="Key holding the file's content.",
    )


class PvcSource(KubeModel):
    """A path on a PersistentVolumeClaim in the resource's namespace."""

    claim_name: str = Field(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=NAME_PATTERN,
        description="PersistentVolumeClaim name.",
    )
    path: str = Field(
        default="",
        description="Path inside the volume; empty means the volume's root.",
    )


class SecretKeyReference(KubeModel):
    """A key of a Secret in the resource's namespace."""

    name: str = Field(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=NAME_PATTERN,
        description="Secret name.",
    )
    key: str = Field(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=KEY_PATTERN,
        description="Key within the Secret.",
    )


class AzureBlobSource(KubeModel):
    """A blob in Azure Storage, read with the job's Azure identity or a SAS from a Secret."""

    account_url: str = Field(
        pattern=r"^https://",
        description="Storage account endpoint, e.g. https://myaccount.blob.core.windows.net.",
    )
    container: str = Field(min_length=1, description="Blob container name.")
    blob: str = Field(min_length=1, description="Blob name (path) inside the container.")
    sas_token_secret_ref: SecretKeyReference | None = Field(
        default=None,
        description="Secret key holding a SAS token; without it the workload identity is used.",
    )


class DataSource(KubeModel):
    """Where a chat-completion JSONL file comes from. Exactly one source is set."""

    model_config = ConfigDict(
        json_schema_extra=rules(exactly_one_of("configMap", "pvc", "url", "azureBlob"))
    )

    config_map: ConfigMapKeySource | None = Field(
        default=None, description="A key of a ConfigMap (small data sets, up to about 1 MiB)."
    )
    pvc: PvcSource | None = Field(default=None, description="A file on a PersistentVolumeClaim.")
    url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="An http(s) URL the trainer downloads.",
    )
    azure_blob: AzureBlobSource | None = Field(default=None, description="A blob in Azure Storage.")


class AzureCredentials(KubeModel):
    """How the operator authenticates to Azure. Empty means Azure Workload Identity."""

    secret_ref: ObjectReference | None = Field(
        default=None,
        description=(
            "Secret with a service principal: keys AZURE_TENANT_ID, AZURE_CLIENT_ID, "
            "AZURE_CLIENT_SECRET."
        ),
    )


class FoundryWorkspace(KubeModel):
    """The Azure AI Foundry project (Azure ML workspace) that runs the job."""

    subscription_id: str = Field(min_length=1, description="Azure subscription id.")
    resource_group: str = Field(min_length=1, description="Resource group of the workspace.")
    name: str = Field(min_length=1, description="Workspace / Foundry project name.")
    region: str | None = Field(
        default=None,
        description="Azure region, e.g. eastus2 (Phi-3 serverless fine-tuning runs only there).",
    )
    credentials: AzureCredentials | None = Field(
        default=None, description="Credentials; Workload Identity when omitted."
    )


class Toleration(KubeModel):
    """A Kubernetes pod toleration."""

    key: str | None = Field(default=None, description="Taint key the toleration applies to.")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (default Equal)."
    )
    value: str | None = Field(default=None, description="Taint value to match with Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated."
    )


class ComputeResources(KubeModel):
    """Compute requested for each pod."""

    gpus: int = Field(default=1, ge=0, le=16, description="GPUs per pod (nvidia.com/gpu).")
    cpu: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(\.[0-9]+)?m?$",
        description="CPU request, as a Kubernetes quantity (e.g. 4 or 500m).",
    )
    memory: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?|[eE][0-9]+)?$",
        description="Memory request and limit, as a Kubernetes quantity (e.g. 32Gi).",
    )


class StatusBase(KubeModel):
    """Fields every kubetune status carries; each kind narrows `phase` to its own enum."""

    # Status is written by the operator alone; a field from a newer or older
    # operator version must not make the whole status unreadable.
    model_config = ConfigDict(extra="ignore")

    phase: str | None = Field(default=None, description="Lifecycle phase.")
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the status was computed for."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Latest observations of the resource's state.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
