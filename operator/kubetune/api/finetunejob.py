"""FineTuneJob: fine-tune a base model with LoRA/QLoRA, locally or on Azure AI Foundry."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field

from kubetune.api.common import (
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    Backend,
    ComputeResources,
    DataSource,
    FoundryWorkspace,
    KubeModel,
    PvcSource,
    StatusBase,
    Toleration,
    immutable,
    rules,
)

MODEL_SCHEME = "model://"
"""spec.baseModel prefix naming a FineTunedModel to continue training from."""
BASE_MODEL_MAX_LENGTH = 1024


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
        default=None,
        ge=0,
        le=2**32 - 1,
        description="Random seed for shuffling, the split and initialisation, in [0, 2^32).",
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
    extra: dict[str, str] | None = Field(
        default=None,
        description=(
            "More hyper-parameters passed to Azure verbatim, by Azure's names (backend foundry)."
        ),
    )


class LoraParams(KubeModel):
    """LoRA adapter settings."""

    r: int = Field(default=16, ge=1, le=512, description="Rank of the adapter matrices.")
    alpha: int = Field(default=32, ge=1, le=1024, description="Scaling numerator (alpha / r).")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None,
        min_length=1,
        description=(
            "Module names to adapt; unset picks the architecture's attention and MLP "
            "projections (for Phi-3: qkv_proj, o_proj, gate_up_proj, down_proj)."
        ),
    )


class Quantization(StrEnum):
    NONE = "none"
    FOUR_BIT = "4bit"


class OutputLocation(KubeModel):
    """Where the trained adapter, checkpoints and metrics are written."""

    pvc: PvcSource = Field(description="A PersistentVolumeClaim and a directory on it.")


class FineTuneJobSpec(KubeModel):
    """The desired fine-tuning run."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            (
                "self.backend != 'foundry' || self.quantization == 'none'",
                "quantization is only available with backend local",
            ),
            (
                "self.backend == 'local' || !has(self.resources)",
                "resources apply to backend local only; Foundry is serverless",
            ),
            # The job's own output cannot be its starting point. Without spec.model the
            # output is named after the job, which CEL on spec cannot see: the operator
            # checks that case when it resolves spec.baseModel.
            (
                f"!has(self.model) || self.baseModel != '{MODEL_SCHEME}' + self.model",
                "spec.baseModel cannot continue from this job's own output model (spec.model)",
            ),
            (
                "self.backend != 'foundry' || !has(self.hyperparameters) "
                "|| !has(self.hyperparameters.epochs) || self.hyperparameters.epochs <= 10",
                "Foundry fine-tunes for 1 to 10 epochs",
            ),
            (
                "self.backend != 'foundry' || !has(self.hyperparameters) "
                "|| !has(self.hyperparameters.batchSize) || self.hyperparameters.batchSize <= 32",
                "Foundry takes a batch size of 1 to 32",
            ),
            (
                "self.backend != 'foundry' || !has(self.hyperparameters) "
                "|| (!has(self.hyperparameters.learningRate) "
                "&& !has(self.hyperparameters.warmupRatio) "
                "&& !has(self.hyperparameters.gradientAccumulationSteps) "
                "&& !has(self.hyperparameters.maxSequenceLength))",
                "backend foundry takes epochs, learningRateMultiplier, batchSize or "
                "batchSizeMultiplier, and seed; pass other Azure settings in hyperparameters.extra",
            ),
            (
                "self.backend == 'foundry' || !has(self.hyperparameters) "
                "|| !has(self.hyperparameters.extra)",
                "hyperparameters.extra applies to backend foundry only",
            ),
            (
                "self.backend != 'foundry' || (!has(self.dataset.training.pvc) && "
                "!(has(self.dataset.validation) && has(self.dataset.validation.pvc)))",
                "backend foundry reads data from a configMap, url or azureBlob, not a pvc",
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
            "continue from an earlier result (it must be Ready and have a PVC source; the job "
            "waits while it does not exist yet, and trains that model's adapter further with "
            "its LoRA settings), or for Foundry an azureml://registries/... id."
        ),
        max_length=BASE_MODEL_MAX_LENGTH,
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
        max_length=NAME_MAX_LENGTH,
        pattern=NAME_PATTERN,
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
        default=None,
        max_length=NAME_MAX_LENGTH,
        pattern=NAME_PATTERN,
        description="PriorityClass of the training pod (local backend).",
    )
    image: str | None = Field(
        default=None, min_length=1, description="Trainer image override (local backend)."
    )
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
        default=None,
        description=(
            "Azure AI Foundry workspace (backend foundry); defaults to the operator's "
            "(the Helm chart's foundry.workspace)."
        ),
    )


class Progress(KubeModel):
    """Training progress reported by the trainer while it runs."""

    epoch: float | None = Field(default=None, description="Current (fractional) epoch.")
    step: int | None = Field(default=None, description="Optimizer steps done.")
    total_steps: int | None = Field(default=None, description="Optimizer steps planned.")
    percent: int | None = Field(default=None, ge=0, le=100, description="Percent done.")
    train_loss: float | None = Field(default=None, description="Latest training loss.")
    eta: datetime | None = Field(default=None, description="Estimated completion time.")
    tokens_per_second: float | None = Field(
        default=None,
        ge=0,
        description=(
            "Training throughput so far: non-padding tokens per second of training steps, "
            "all processes together."
        ),
    )


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
    """The Azure side of a foundry job, apart from the phase (Azure's own words)."""

    job_name: str | None = Field(
        default=None,
        description="Azure ML job name, derived from the uid and recorded before submission.",
    )
    status: str | None = Field(
        default=None, description="Raw Azure job status (NotStarted, Running, Completed...)."
    )
    portal_url: str | None = Field(default=None, description="Link to the job in Azure.")
    model_id: str | None = Field(
        default=None, description="The registered Azure model, as a serverless model id."
    )


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
    resolved_base_model: str | None = Field(
        default=None,
        description=(
            "The base model the adapter applies to: spec.baseModel, or for "
            "model://<FineTunedModel> that model's base model (local backend)."
        ),
    )
