"""FineTunedModel status from its deployments and deletion state. Pure: no I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kubetune.api.common import ConditionStatus
from kubetune.api.finetunedmodel import FineTunedModelPhase, FineTunedModelStatus
from kubetune.conditions import set_condition

BLOCKED = "DeletionBlocked"
# The condition reason while Azure refuses to delete the model (an endpoint serves it).
AZURE_BLOCKED = "AzureDeploymentsExist"


def blocked_message(users: list[str]) -> str:
    names = ", ".join(users)
    return f"delete ModelDeployment {names} first: a model cannot be deleted while it is deployed"


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
    old: FineTunedModelStatus, users: list[str], *, deleting: bool, now: datetime
) -> FineTunedModelStatus:
    """Status for the model's current deployments (pure)."""
    update: dict[str, Any] = {"deployments": users or None}
    blocked_elsewhere = any(
        c.type == BLOCKED and c.status == ConditionStatus.TRUE and c.reason == AZURE_BLOCKED
        for c in old.conditions
    )
    if deleting and not users and blocked_elsewhere:
        return old.model_copy(update=update)  # only a retry of the Azure deletion unblocks it
    if deleting:
        if users:
            blocked = blocked_status(old, "DeploymentsExist", blocked_message(users), now=now)
            update.update(phase=blocked.phase, conditions=blocked.conditions)
        else:
            update["phase"] = FineTunedModelPhase.DELETING
            if any(c.type == BLOCKED for c in old.conditions):
                update["conditions"] = set_condition(
                    old.conditions,
                    BLOCKED,
                    ConditionStatus.FALSE,
                    "DeploymentsGone",
                    "No ModelDeployment uses the model any more",
                    generation=old.observed_generation,
                    now=now,
                )
    elif old.phase is not None:
        update["phase"] = FineTunedModelPhase.IN_USE if users else FineTunedModelPhase.READY
    return old.model_copy(update=update)
