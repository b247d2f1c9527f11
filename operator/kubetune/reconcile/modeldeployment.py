"""ModelDeployment status from its model and its serving Deployment. Pure: no I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kubetune.api.common import ConditionStatus
from kubetune.api.finetunedmodel import FineTunedModelPhase
from kubetune.api.modeldeployment import ModelDeploymentPhase, ModelDeploymentStatus
from kubetune.conditions import set_condition

Obj = dict[str, Any]
SERVABLE = (FineTunedModelPhase.READY, FineTunedModelPhase.IN_USE)


def with_phase(
    base: ModelDeploymentStatus,
    phase: ModelDeploymentPhase,
    ctype: str,
    ok: bool,
    reason: str,
    msg: str,
    *,
    generation: int,
    now: datetime,
) -> ModelDeploymentStatus:
    """`base` in `phase`, with the condition `ctype` set to say why."""
    conditions = set_condition(
        base.conditions,
        ctype,
        ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
        reason,
        msg,
        generation=generation,
        now=now,
    )
    return base.model_copy(update={"phase": phase, "conditions": conditions})


def model_gate(
    old: ModelDeploymentStatus,
    model: Obj | None,
    model_name: str,
    *,
    generation: int,
    now: datetime,
) -> tuple[ModelDeploymentStatus, bool]:
    """The ModelReady condition, and whether the model can be served (else WaitingForModel)."""
    phase = (model or {}).get("status", {}).get("phase")
    if model is None or phase not in SERVABLE or model["metadata"].get("deletionTimestamp"):
        why = "does not exist" if model is None else f"is {phase or 'not ready'}"
        waiting = with_phase(
            old,
            ModelDeploymentPhase.WAITING_FOR_MODEL,
            "ModelReady",
            False,
            "ModelNotReady",
            f"FineTunedModel {model_name} {why}",
            generation=generation,
            now=now,
        )
        return waiting, False
    conditions = set_condition(
        old.conditions,
        "ModelReady",
        ConditionStatus.TRUE,
        "ModelReady",
        f"FineTunedModel {model_name} is {phase}",
        generation=generation,
        now=now,
    )
    return old.model_copy(update={"conditions": conditions}), True


def serving_state(
    old: ModelDeploymentStatus,
    *,
    model: Obj | None,
    model_name: str,
    deployment: Obj | None,
    replicas: int,
    endpoint: str,
    generation: int,
    now: datetime,
) -> ModelDeploymentStatus:
    """The status for the model's state and the serving Deployment's (pure)."""
    old, servable = model_gate(old, model, model_name, generation=generation, now=now)
    if not servable:
        return old
    status = (deployment or {}).get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    progressing = conditions.get("Progressing") or {}
    if progressing.get("status") == "False":
        return with_phase(
            old,
            ModelDeploymentPhase.FAILED,
            "Available",
            False,
            progressing.get("reason") or "RolloutFailed",
            progressing.get("message", ""),
            generation=generation,
            now=now,
        )
    ready = int(status.get("availableReplicas") or 0)
    base = old.model_copy(update={"ready_replicas": ready, "endpoint": endpoint})
    if deployment is not None and ready >= replicas:
        return with_phase(
            base,
            ModelDeploymentPhase.READY,
            "Available",
            True,
            "MinimumReplicasAvailable",
            f"{ready}/{replicas} replicas serve {endpoint}",
            generation=generation,
            now=now,
        )
    return with_phase(
        base,
        ModelDeploymentPhase.DEPLOYING,
        "Available",
        False,
        "Deploying",
        f"{ready}/{replicas} replicas ready",
        generation=generation,
        now=now,
    )
