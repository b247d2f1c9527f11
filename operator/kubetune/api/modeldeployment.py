"""ModelDeployment: serve a FineTunedModel, on the cluster or as an Azure serverless endpoint."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field

from kubetune.api.common import (
    Backend,
    ComputeResources,
    KubeModel,
    ObjectReference,
    StatusBase,
    Toleration,
    immutable,
    rules,
)


class ModelDeploymentPhase(StrEnum):
    WAITING_FOR_MODEL = "WaitingForModel"
    DEPLOYING = "Deploying"
    READY = "Ready"
    FAILED = "Failed"


class Runtime(StrEnum):
    VLLM = "vllm"
    KUBETUNE = "kubetune"


class LocalServing(KubeModel):
    """Serving on this cluster."""

    runtime: Runtime = Field(
        default=Runtime.VLLM,
        description="vllm: vLLM with the LoRA adapter (GPUs); kubetune: the CPU/dev server.",
    )
    image: str | None = Field(default=None, min_length=1, description="Runtime image override.")
    replicas: int = Field(default=1, ge=0, le=100, description="Serving replicas.")
    resources: ComputeResources | None = Field(default=None, description="Compute per replica.")
    node_selector: dict[str, str] | None = Field(
        default=None, description="Node labels the serving pods must match."
    )
    tolerations: list[Toleration] | None = Field(
        default=None, description="Extra tolerations for the serving pods."
    )


class FoundryServing(KubeModel):
    """An Azure AI Foundry serverless endpoint."""

    endpoint_name: str | None = Field(
        default=None,
        max_length=32,
        description="Serverless endpoint name; derived from the deployment's name when omitted.",
    )
    content_safety: bool = Field(
        default=True,
        description=(
            "Azure AI content safety filtering on the endpoint. Always on: Azure's API for "
            "serverless endpoints cannot turn it off (the Foundry portal can)."
        ),
        json_schema_extra=rules(
            (
                "self == true",
                "content safety cannot be turned off through Azure's API for serverless "
                "endpoints; turn it off in the Foundry portal",
            )
        ),
    )


class ModelDeploymentSpec(KubeModel):
    """The desired serving of a FineTunedModel."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            (
                "self.backend != 'local' || !has(self.foundry)",
                "spec.foundry applies to backend foundry only",
            ),
            (
                "self.backend != 'foundry' || !has(self.local)",
                "spec.local applies to backend local only",
            ),
        )
    )

    model_ref: ObjectReference = Field(
        description="The FineTunedModel to serve.", json_schema_extra=immutable("modelRef")
    )
    backend: Backend = Field(
        default=Backend.LOCAL,
        description="local: pods on this cluster; foundry: an Azure serverless endpoint.",
        json_schema_extra=immutable("backend"),
    )
    local: LocalServing | None = Field(default=None, description="Settings for backend local.")
    foundry: FoundryServing | None = Field(
        default=None, description="Settings for backend foundry."
    )


class FoundryEndpointStatus(KubeModel):
    """The Azure side of a foundry deployment. Its key is in a Secret, never here."""

    endpoint_name: str | None = Field(default=None, description="Serverless endpoint name.")
    provisioning_state: str | None = Field(
        default=None, description="Azure's provisioning state (Creating, Succeeded, Failed...)."
    )
    key_secret: str | None = Field(
        default=None,
        description="Secret (owned by the deployment) with the endpoint's two keys.",
    )


class ModelDeploymentStatus(StatusBase):
    """Observed state of a ModelDeployment."""

    phase: ModelDeploymentPhase | None = Field(default=None, description="Lifecycle phase.")
    endpoint: str | None = Field(default=None, description="URL of the OpenAI-compatible endpoint.")
    ready_replicas: int | None = Field(default=None, description="Replicas ready to serve.")
    foundry: FoundryEndpointStatus | None = Field(
        default=None, description="The Azure serverless endpoint (backend foundry)."
    )
