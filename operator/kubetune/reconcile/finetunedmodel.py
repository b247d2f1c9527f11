"""FineTunedModel status from its users (deployments, jobs training from it) and
deletion state. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from kubetune.api.common import ConditionStatus
from kubetune.api.finetunedmodel import FineTunedModelPhase, FineTunedModelStatus
from kubetune.conditions import set_condition

BLOCKED = "DeletionBlocked"
# The condition reason while Azure refuses to delete the model (an endpoint serves it).
AZURE_BLOCKED = "AzureDeploymentsExist"


def blocked_message(users: Sequence[str], trainers: Sequence[str] = ()) -> str:
    """What holds a deletion up: deployments of the model, and jobs training from it."""
    parts = []
    if users:
        parts.append(
            f"delete ModelDeployment {', '.join(users)} first: "
            "a model cannot be deleted while it is deployed"
        )
    if trainers:
        parts.append(
            f"FineTuneJob {', '.join(trainers)} continues training from it: wait for it to "
            "finish, or delete it"
        )
    return "; ".join(parts)


def blocked_status(
    old: FineTunedModelStatus, reason: str, message: str, *, now: datetime
) -> FineTunedModelStatus:
    """DeletionBlocked, with the condition saying what still uses the model."""
    conditions = set_condition(
        old.conditions,
        BLOCKED,
        ConditionStatus.TRUE,
        reason,
        message,
        generation=old.observed_generation,
        now=now,
    )
    return old.model_copy(
        update={"phase": FineTunedModelPhase.DELETION_BLOCKED, "conditions": conditions}
    )


def usage_status(
    old: FineTunedModelStatus,
    users: list[str],
    *,
    deleting: bool,
    now: datetime,
    trainers: Sequence[str] = (),
) -> FineTunedModelStatus:
    """Status for the model's current deployments (`users`) and the unfinished jobs
    that continue training from it (`trainers`), which hold up its deletion too: a
    cleanup of the adapter would pull it from under them (pure)."""
    update: dict[str, Any] = {"deployments": users or None}
    blocked_elsewhere = any(
        c.type == BLOCKED and c.status == ConditionStatus.TRUE and c.reason == AZURE_BLOCKED
        for c in old.conditions
    )
    in_use = bool(users or trainers)
    if deleting and not in_use and blocked_elsewhere:
        return old.model_copy(update=update)  # only a retry of the Azure deletion unblocks it
    if deleting:
        if in_use:
            blocked = blocked_status(
                old,
                "DeploymentsExist" if users else "TrainingJobsExist",
                blocked_message(users, trainers),
                now=now,
            )
            update.update(phase=blocked.phase, conditions=blocked.conditions)
        else:
            update["phase"] = FineTunedModelPhase.DELETING
            if any(c.type == BLOCKED for c in old.conditions):
                update["conditions"] = set_condition(
                    old.conditions,
                    BLOCKED,
                    ConditionStatus.FALSE,
                    "NotInUse",
                    "No ModelDeployment or unfinished FineTuneJob uses the model any more",
                    generation=old.observed_generation,
                    now=now,
                )
    elif old.phase is not None:
        update["phase"] = FineTunedModelPhase.IN_USE if users else FineTunedModelPhase.READY
    return old.model_copy(update=update)
