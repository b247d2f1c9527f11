"""The three kubetune kinds: names, models and how `kubectl get` shows them."""

from __future__ import annotations

from dataclasses import dataclass

from kubetune.api.common import GROUP, KubeModel, StatusBase
from kubetune.api.finetunedmodel import FineTunedModelSpec, FineTunedModelStatus
from kubetune.api.finetunejob import FineTuneJobSpec, FineTuneJobStatus
from kubetune.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus

CATEGORY = "kubetune"


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class ResourceKind:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    description: str
    spec: type[KubeModel]
    status: type[StatusBase]
    columns: tuple[PrinterColumn, ...]
    root_rules: tuple[tuple[str, str], ...] = ()

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


PHASE = PrinterColumn("Phase", ".status.phase", description="Lifecycle phase.")
BACKEND = PrinterColumn("Backend", ".spec.backend", description="local or foundry.")
AGE = PrinterColumn("Age", ".metadata.creationTimestamp", type="date")

FINETUNEJOB = ResourceKind(
    kind="FineTuneJob",
    plural="finetunejobs",
    short_names=("ftj",),
    description=(
        "FineTuneJob fine-tunes a base model with LoRA/QLoRA on chat-completion JSONL, "
        "either in training pods on this cluster's GPU nodes or on Azure AI Foundry, and "
        "creates a FineTunedModel when it succeeds."
    ),
    spec=FineTuneJobSpec,
    status=FineTuneJobStatus,
    columns=(
        BACKEND,
        PHASE,
        PrinterColumn("Progress", ".status.progress.percent", "integer", "Percent done."),
        PrinterColumn("Model", ".status.model", description="FineTunedModel created."),
        AGE,
        PrinterColumn("Base", ".spec.baseModel", description="Base model.", priority=1),
        PrinterColumn("Job", ".status.jobName", description="Training Job.", priority=1),
    ),
    root_rules=(
        (
            "self.metadata.name.size() <= 63",
            "a FineTuneJob's name must be at most 63 characters: it names the training Job",
        ),
    ),
)

FINETUNEDMODEL = ResourceKind(
    kind="FineTunedModel",
    plural="finetunedmodels",
    short_names=("ftm",),
    description=(
        "FineTunedModel is a fine-tuned adapter or Azure model. It cannot be deleted while a "
        "ModelDeployment uses it or an unfinished FineTuneJob continues training from it: "
        "deletion waits until the last of them is gone."
    ),
    spec=FineTunedModelSpec,
    status=FineTunedModelStatus,
    columns=(
        PrinterColumn("Base", ".spec.baseModel", description="Base model."),
        PHASE,
        PrinterColumn("Deployments", ".status.deployments", description="Deployments using it."),
        PrinterColumn("Policy", ".spec.deletionPolicy", description="Retain or Delete."),
        AGE,
    ),
)

MODELDEPLOYMENT = ResourceKind(
    kind="ModelDeployment",
    plural="modeldeployments",
    short_names=("mdep",),
    description=(
        "ModelDeployment serves a FineTunedModel behind an OpenAI-compatible endpoint, on "
        "this cluster or as an Azure AI Foundry serverless endpoint."
    ),
    spec=ModelDeploymentSpec,
    status=ModelDeploymentStatus,
    columns=(
        PrinterColumn("Model", ".spec.modelRef.name", description="FineTunedModel served."),
        BACKEND,
        PHASE,
        PrinterColumn("Ready", ".status.readyReplicas", "integer", "Ready replicas."),
        PrinterColumn("Endpoint", ".status.endpoint", description="Endpoint URL."),
        AGE,
    ),
)

KINDS: tuple[ResourceKind, ...] = (FINETUNEJOB, FINETUNEDMODEL, MODELDEPLOYMENT)
