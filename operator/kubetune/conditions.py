"""Pure helpers for `metav1.Condition` lists: find one, set one.

`set_condition` keeps `lastTransitionTime` when the status does not flip, as the
Kubernetes API conventions ask, so repeated reconciles do not churn the object.
"""

from __future__ import annotations

from datetime import datetime

from kubetune.api.common import Condition, ConditionStatus

MAX_MESSAGE = 1024


def find_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """A new list with the condition of `type_` set; other conditions are kept in order."""
    old = find_condition(conditions, type_)
    changed = old is None or old.status != status
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message[:MAX_MESSAGE],
        last_transition_time=now if changed or old is None else old.last_transition_time,
        observed_generation=generation,
    )
    if old is None:
        return [*conditions, new]
    return [new if c.type == type_ else c for c in conditions]
