"""FineTuneJob: fine-tune a base model with LoRA/QLoRA, locally or on Azure AI Foundry."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import ConfigDict, Field

from kubetune.api.common import (
    Backend,
    ComputeResources,
    DataSource,
    KubeModel,
    ObjectReference,
    PvcSource,
    StatusBase,
    Toleration,
    immutable,
    rules,
)


class FineTuneJobPhase(StrEnum):
    PENDING = "Pending"
    VALIDATING = "Validating"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    CANCELLED = "Cancelled"


class Dataset(KubeModel):
    """Training and validation data: chat-completion JSONL, one {"messages": [...]} per line."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            (
                "!(has(self.validation) && has(self.validationSplit))",
                "set either dataset.validation or dataset.validationSplit, not both",
            )
        )
    )

    training: DataSource = Field(description="The training file.")
    validation: DataSource | None = Field(
        default=None, description="The validation file; without it, validationSplit is used."
    )
    validation_split: float | None = Field(
        default=None,
        gt=0,
        le=0.5,
        description=(
            "Fraction of the training examples held out for validation when no validation "
            "file is given, in (0, 0.5]. Defaults to 0.1 in that case."
        ),
    )


class Hyperparameters(KubeModel):
    """Training hyper-parameters. Foundry's multipliers and concrete values are alternatives."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            (
                "!(has(self.learningRate) && has(self.learningRateMultiplier))",
                "set either learningRate or learningRateMultiplier, not both",
            ),
            (
                "!(has(self.batchSize) && has(self.batchSizeMultiplier))",
                "set either batchSize or batchSizeMultiplier, not both",
            ),
        )
    )

    epochs: int = Field(default=3, ge=1, le=100, description="Passes over the training data.")
    learning_rate: float | None = Field(
        default=None, gt=0, le=1, description="Peak learning rate, e.g. 0.0002."
    )
    learning_rate_multiplier: float | None = Field(
        default=None,
        gt=0,
        le=10,
        description=(
            "Multiplier of the base model's default learning rate (Foundry's knob), (0, 10]."
        ),
    )
    batch_size: int | None = Field(
        default=None, ge=1, le=1024, description="Examples per optimizer step and device."
    )
    batch_size_multiplier: float | None = Field(
        default=None,
        gt=0,
        le=32,
        description="Multiplier of the default batch size (Foundry's knob), (0, 32].",
    )
    seed: int | None = Field(
        default=None, ge=0, description="Random seed for shuffling, the split and initialisation."
    )
    max_sequence_length: int | None = Field(
        default=None,
        ge=16,
        le=131072,
        description="Longest tokenized example; longer ones are rejected by validation.",
    )
    warmup_ratio: float | None = Field(
        default=None, ge=0, lt=1, description="Fraction of steps spent warming up the rate."
    )
    gradient_accumulation_steps: int | None = Field(
        default=None, ge=1, le=1024, description="Micro-batches accumulated per optimizer step."
    )


class LoraParams(KubeModel):
    """LoRA adapter settings."""

    r: int = Field(default=16, ge=1, le=512, description="Rank of the adapter matrices.")
    alpha: int = Field(default=32, ge=1, le=1024, description="Scaling numerator (alpha / r).")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | None = Field(
        default=None,
        min_length=1,
        description=(
            "Module names to adapt; empty picks the architecture's attention and MLP "
            "projections (for Phi-3: qkv_proj, o_proj, gate_up_proj, down_proj)."
        ),
    )


class Quantization(StrEnum):
    NONE = "none"
    FOUR_BIT = "4bit"


class OutputLocation(KubeModel):
    """Where the trained adapter, checkpoints and metrics are written."""

    pvc: PvcSource = Field(description="A PersistentVolumeClaim and a directory on it.")


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


class FineTuneJobSpec(KubeModel):
    """The desired fine-tuning run."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            (
                "self.backend != 'foundry' || has(self.workspace)",
                "backend foundry requires spec.workspace (subscriptionId, resourceGroup, name)",
            ),
            (
                "self.backend != 'foundry' || self.quantization == 'none'",
                "quantization is only available with backend local",
            ),
            (
                "self.backend == 'local' || !has(self.resources)",
                "resources apply to backend local only; Foundry is serverless",
            ),
        )
    )

    backend: Backend = Field(
        default=Backend.LOCAL,
        description="local: training pods on this cluster's GPU nodes; foundry: Azure AI Foundry.",
        json_schema_extra=immutable("backend"),
    )
    base_model: str = Field(
        min_length=1,
        description=(
            "The model to fine-tune: a Hugging Face id (microsoft/Phi-3-mini-4k-instruct), "
            "pvc://<claim>/<path> for a model directory on a PVC, model://<FineTunedModel> to "
            "continue from an earlier result, or for Foundry an azureml://registries/... id."
        ),
        json_schema_extra=immutable("baseModel"),
    )
    dataset: Dataset = Field(
        description="Training and validation data.", json_schema_extra=immutable("dataset")
    )
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters, description="Training hyper-parameters."
    )
    lora: LoraParams = Field(default_factory=LoraParams, description="LoRA adapter settings.")
    quantization: Quantization = Field(
        default=Quantization.NONE,
        description="none: LoRA on bf16/fp16 weights; 4bit: QLoRA (local GPUs only).",
    )
    model: str | None = Field(
        default=None,
        max_length=253,
        description="Name of the FineTunedModel created on success; defaults to the job's name.",
    )
    suspend: bool = Field(
        default=False,
        description="true pauses (or keeps queued) the job; false resumes it. Kueue-compatible.",
    )
    resources: ComputeResources | None = Field(
        default=None, description="Compute per training pod (local backend)."
    )
    node_selector: dict[str, str] | None = Field(
        default=None, description="Node labels the training pod must match (local backend)."
    )
    tolerations: list[Toleration] | None = Field(
        default=None,
        description="Extra tolerations for the training pod; the GPU taint is tolerated already.",
    )
    priority_class_name: str | None = Field(
        default=None, description="PriorityClass of the training pod (local backend)."
    )
    image: str | None = Field(default=None, description="Trainer image override (local backend).")
    output: OutputLocation | None = Field(
        default=None,
        description="Where the adapter is written (local backend); defaults to the operator's.",
    )
    backoff_limit: int = Field(
        default=3,
        ge=0,
        le=20,
        description=(
            "Retries of a training pod that failed for an infrastructure reason (eviction, "
            "node loss, out of memory). Bad input data is never retried."
        ),
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Seconds the training may run before it fails with DeadlineExceeded.",
    )
    workspace: FoundryWorkspace | None = Field(
        default=None, description="Azure AI Foundry workspace (backend foundry)."
    )


class Progress(KubeModel):
    """Training progress reported by the trainer while it runs."""

    epoch: float | None = Field(default=None, description="Current (fractional) epoch.")
    step: int | None = Field(default=None, description="Optimizer steps done.")
    total_steps: int | None = Field(default=None, description="Optimizer steps planned.")
    percent: int | None = Field(default=None, ge=0, le=100, description="Percent done.")
    train_loss: float | None = Field(default=None, description="Latest training loss.")
    eta: datetime | None = Field(default=None, description="Estimated completion time.")


class Metrics(KubeModel):
    """Final evaluation metrics."""

    train_loss: float | None = Field(default=None, description="Final training loss.")
    validation_loss: float | None = Field(default=None, description="Validation loss.")
    perplexity: float | None = Field(default=None, description="exp(validationLoss).")
    token_accuracy: float | None = Field(
        default=None,
        description="Mean next-token accuracy on assistant tokens of the validation set.",
    )


class Usage(KubeModel):
    """Resources consumed."""

    trained_tokens: int | None = Field(default=None, description="Tokens trained on.")
    gpu_seconds: float | None = Field(default=None, description="GPU-seconds used.")


class FoundryJobStatus(KubeModel):
    """The Azure side of a foundry job."""

    job_name: str | None = Field(default=None, description="Azure ML job name.")
    status: str | None = Field(default=None, description="Raw Azure job status.")
    portal_url: str | None = Field(default=None, description="Link to the job in Azure.")


class FineTuneJobStatus(StatusBase):
    """Observed state of a FineTuneJob."""

    phase: FineTuneJobPhase | None = Field(default=None, description="Lifecycle phase.")
    start_time: datetime | None = Field(default=None, description="When training started.")
    completion_time: datetime | None = Field(default=None, description="When it finished.")
    progress: Progress | None = Field(default=None, description="Progress while running.")
    metrics: Metrics | None = Field(default=None, description="Metrics at the end.")
    usage: Usage | None = Field(default=None, description="Resources consumed.")
    job_name: str | None = Field(default=None, description="The batch/v1 Job (backend local).")
    foundry: FoundryJobStatus | None = Field(
        default=None, description="Azure job (backend foundry)."
    )
    model: str | None = Field(default=None, description="The FineTunedModel created on success.")
