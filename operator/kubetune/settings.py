"""Operator run options, from `kubetune run` flags (and their KUBETUNE_* environment defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from kubetune.api.common import FoundryWorkspace


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


@dataclass(frozen=True)
class LocalSettings:
    """Cluster-wide defaults of the local backend (the Helm chart's values)."""

    trainer_image: str = "ghcr.io/kubetune/kubetune-trainer:0.1.0"
    """Image of training pods and of the `kubetune` CPU serving runtime."""
    vllm_image: str = "vllm/vllm-openai:v0.6.4"
    """Image of the `vllm` serving runtime."""
    gpu_resource: str = "nvidia.com/gpu"
    """Extended resource name of a GPU; its taint is tolerated by training pods."""
    progress_url: str = "http://kubetune-operator.kubetune-system.svc:8080"
    """Base URL at which training pods reach the operator's progress endpoint."""
    default_output_pvc: str | None = None
    """PVC that receives adapters of jobs without spec.output; None makes it required."""
    reference_timeout: float = 300.0
    """Seconds a job waits for a missing dataset ConfigMap (or key) before it fails."""


@dataclass(frozen=True)
class FoundrySettings:
    """How the Foundry backend paces its calls to Azure."""

    poll_interval: float = 30.0
    """Seconds between polls of a running Azure job or a provisioning endpoint at first."""
    max_poll_interval: float = 300.0
    """Polls back off (doubling while nothing changes) up to this many seconds."""
    endpoint_check_interval: float = 600.0
    """Seconds between checks that a Ready serverless endpoint still exists on Azure."""
    staging_dir: str = "/tmp/kubetune-foundry"
    """Where training data is staged for upload (an emptyDir in the chart)."""
    workspace: FoundryWorkspace | None = None
    """The workspace of foundry jobs that name none (the chart's foundry.workspace)."""


@dataclass(frozen=True)
class RunOptions:
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty watches the whole cluster."""
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    """Port of /healthz, /metrics and the trainers' progress endpoint."""
    peering: str | None = None
    """Kopf peering name for several replicas; None runs standalone."""
    priority: int = 0
    """Peering priority: the highest-priority replica acts, the others stand by."""
    peering_lifetime: int = 15
    """Seconds a silent replica is still trusted; a standby takes over after this."""
    workers: int = 50
    """Objects of one kind handled at once (Kopf's worker limit), and jobs synced from their
    training Jobs and pods at once; bounds memory in a burst."""
    log_format: LogFormat = LogFormat.TEXT
    verbose: bool = False
    local: LocalSettings = field(default_factory=LocalSettings)
    foundry: FoundrySettings = field(default_factory=FoundrySettings)
