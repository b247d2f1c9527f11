"""FineTunedModel: a trained adapter or Azure model that deployments can serve."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field

from kubetune.api.common import (
    FoundryWorkspace,
    KubeModel,
    PvcSource,
    StatusBase,
    exactly_one_of,
    rules,
)


class FineTunedModelPhase(StrEnum):
    READY = "Ready"
    IN_USE = "InUse"
    DELETION_BLOCKED = "DeletionBlocked"
    DELETING = "Deleting"


class DeletionPolicy(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class ModelSource(KubeModel):
    """Where the model's artifact lives. Exactly one source is set."""

    model_config = ConfigDict(json_schema_extra=rules(exactly_one_of("pvc", "azureModelId")))

    pvc: PvcSource | None = Field(
        default=None, description="A LoRA adapter directory on a PersistentVolumeClaim."
    )
    azure_model_id: str | None = Field(
        default=None,
        pattern=r"^azureml://",
        description="Registered Azure ML model id (azureml://...).",
    )


class FineTunedModelSpec(KubeModel):
    """A fine-tuned model, created by a FineTuneJob or registered by hand."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            (
                "!has(self.source.azureModelId) || has(self.workspace)",
                "an Azure model (source.azureModelId) needs spec.workspace",
            )
        )
    )

    base_model: str = Field(
        min_length=1,
        max_length=1024,
        description=(
            "The base model the adapter applies to: a Hugging Face id, pvc://<claim>/<path> "
            "or an azureml:// id."
        ),
        json_schema_extra=rules(
            ("self == oldSelf", "baseModel is immutable"),
            (
                "!self.startsWith('model://')",
                "spec.baseModel is the model the adapter applies to, not a FineTunedModel "
                "(model://)",
            ),
        ),
    )
    source: ModelSource = Field(
        description="Where the artifact lives.",
        json_schema_extra=rules(("self == oldSelf", "source is immutable")),
    )
    workspace: FoundryWorkspace | None = Field(
        default=None,
        description="The Azure AI Foundry workspace holding an Azure model (its deployments too).",
        json_schema_extra=rules(("self == oldSelf", "workspace is immutable")),
    )
    source_job: str | None = Field(
        default=None, description="The FineTuneJob that produced the model, if any."
    )
    deletion_policy: DeletionPolicy = Field(
        default=DeletionPolicy.RETAIN,
        description=(
            "Retain keeps the stored artifact or Azure model on deletion; Delete removes it."
        ),
    )


class FineTunedModelStatus(StatusBase):
    """Observed state of a FineTunedModel."""

    phase: FineTunedModelPhase | None = Field(default=None, description="Lifecycle phase.")
    deployments: list[str] | None = Field(
        default=None, description="ModelDeployments that use this model (they block deletion)."
    )
