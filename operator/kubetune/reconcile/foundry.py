"""Status of foundry FineTuneJobs and ModelDeployments from what Azure says. Pure: no I/O.

Azure's own words stay in `status.foundry` (the raw job status, the endpoint's
provisioning state); the phase is kubetune's, the same set as for local jobs, so
`kubectl get`, Argo CD health and alerts read both backends alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kubetune.api.finetunejob import FineTuneJobPhase, FineTuneJobStatus, Hyperparameters
from kubetune.api.modeldeployment import (
    FoundryEndpointStatus,
    ModelDeploymentPhase,
    ModelDeploymentStatus,
)
from kubetune.backends.foundry import EndpointInfo, JobInfo
from kubetune.reconcile.finetunejob import TERMINAL, Observed
from kubetune.reconcile.modeldeployment import model_gate, with_phase

Phase = FineTuneJobPhase

# Azure job statuses (azure-ai-ml's JobStatus) as phases. Unknown keeps the phase.
AZURE_PHASES: dict[str, FineTuneJobPhase] = {
    "NotStarted": Phase.QUEUED,
    "Starting": Phase.QUEUED,
    "Provisioning": Phase.QUEUED,
    "Preparing": Phase.QUEUED,
    "Queued": Phase.QUEUED,
    "Running": Phase.RUNNING,
    "Finalizing": Phase.RUNNING,
    "CancelRequested": Phase.RUNNING,
    "Completed": Phase.SUCCEEDED,
    "Failed": Phase.FAILED,
    "NotResponding": Phase.FAILED,
    "Canceled": Phase.CANCELLED,
    "Paused": Phase.CANCELLED,
}
# Foundry's default batch size for serverless fine-tuning: batchSizeMultiplier scales it.
FOUNDRY_BATCH_SIZE = 1
MAX_FOUNDRY_BATCH_SIZE = 32


def polling_done(status: FineTuneJobStatus) -> bool:
    """A foundry job needs no more polls: it ended, and a success has its model."""
    unregistered = status.phase is FineTuneJobPhase.SUCCEEDED and status.model is None
    return status.phase in TERMINAL and not unregistered


def observe_azure_job(info: JobInfo, old: FineTuneJobStatus) -> Observed:
    """The phase, reason and message for an Azure job status."""
    phase = AZURE_PHASES.get(info.status, old.phase or Phase.QUEUED)
    where = f"Azure job {info.name} is {info.status}"
    if phase is Phase.FAILED:
        return Observed(phase, "AzureJobFailed", f"{where}: {info.error or 'no message'}")
    if phase is Phase.CANCELLED:
        return Observed(phase, "AzureJobCanceled", f"{where}.")
    if phase is Phase.SUCCEEDED:
        model = f"{info.model_name}:{info.model_version}" if info.model_version else "a model"
        return Observed(phase, "AzureJobCompleted", f"{where}; Azure registered {model}.")
    reason = "Cancelling" if info.status == "CancelRequested" else info.status
    return Observed(phase, reason, f"{where}.")


def foundry_hyperparameters(h: Hyperparameters) -> dict[str, str]:
    """Our fields under Foundry's names (sent as strings), then `extra` verbatim.

    epochs → n_epochs, learningRateMultiplier → learning_rate_multiplier, batchSize →
    batch_size; batchSizeMultiplier multiplies Foundry's default batch size (1) and is
    rounded into 1..32. `extra` wins over the mapped values: it is the user's escape hatch.
    """
    out: dict[str, str] = {"n_epochs": str(h.epochs)}
    if h.learning_rate_multiplier is not None:
        out["learning_rate_multiplier"] = f"{h.learning_rate_multiplier:g}"
    if h.batch_size is not None:
        out["batch_size"] = str(h.batch_size)
    elif h.batch_size_multiplier is not None:
        size = round(FOUNDRY_BATCH_SIZE * h.batch_size_multiplier)
        out["batch_size"] = str(min(max(size, 1), MAX_FOUNDRY_BATCH_SIZE))
    out.update(h.extra or {})
    return out


def endpoint_status(
    old: ModelDeploymentStatus,
    *,
    model: dict[str, Any] | None,
    model_name: str,
    endpoint_name: str,
    endpoint: EndpointInfo | None,
    key_secret: str | None,
    generation: int,
    now: datetime,
) -> ModelDeploymentStatus:
    """The status of a foundry deployment for its model and its Azure endpoint (None: absent).

    An endpoint that was provisioned and is gone was removed on Azure's side (Azure
    deletes serverless endpoints idle for 15 days): that is reported, not hidden.
    """
    old, servable = model_gate(old, model, model_name, generation=generation, now=now)
    if not servable:
        return old
    previous = old.foundry or FoundryEndpointStatus()
    if endpoint is None:
        if previous.provisioning_state == "Succeeded":
            gone = old.model_copy(
                update={
                    "foundry": previous.model_copy(update={"provisioning_state": "Missing"}),
                    "endpoint": None,
                }
            )
            return with_phase(
                gone,
                ModelDeploymentPhase.FAILED,
                "Available",
                False,
                "EndpointMissing",
                f"Serverless endpoint {endpoint_name} no longer exists on Azure (Azure removes "
                "endpoints idle for 15 days); delete and re-apply this ModelDeployment to "
                "create it again",
                generation=generation,
                now=now,
            )
        return old
    state = endpoint.provisioning_state
    ready = state == "Succeeded" and key_secret is not None
    base = old.model_copy(
        update={
            "foundry": FoundryEndpointStatus(
                endpoint_name=endpoint_name, provisioning_state=state, key_secret=key_secret
            ),
            "endpoint": endpoint.scoring_uri if ready else old.endpoint,
        }
    )
    if ready:
        return with_phase(
            base,
            ModelDeploymentPhase.READY,
            "Available",
            True,
            "EndpointReady",
            f"Serverless endpoint {endpoint_name} serves {endpoint.scoring_uri}; "
            f"its key is in Secret {key_secret}",
            generation=generation,
            now=now,
        )
    if state in ("Failed", "Canceled"):
        return with_phase(
            base,
            ModelDeploymentPhase.FAILED,
            "Available",
            False,
            "EndpointFailed",
            f"Azure could not provision serverless endpoint {endpoint_name} ({state})",
            generation=generation,
            now=now,
        )
    return with_phase(
        base,
        ModelDeploymentPhase.DEPLOYING,
        "Available",
        False,
        "Provisioning",
        f"Serverless endpoint {endpoint_name} is {state}",
        generation=generation,
        now=now,
    )
