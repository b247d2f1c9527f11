"""FineTunedModel: a trained adapter or Azure model that deployments can serve."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field

from kubetune.api.common import KubeModel, PvcSource, StatusBase, exactly_one_of, rules


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

    base_model: str = Field(
        min_length=1,
        description="The base model the adapter applies to (same forms as FineTuneJob.baseModel).",
        json_schema_extra=rules(("self == oldSelf", "baseModel is immutable")),
    )
    source: ModelSource = Field(
        description="Where the artifact lives.",
        json_schema_extra=rules(("self == oldSelf", "source is immutable")),
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
