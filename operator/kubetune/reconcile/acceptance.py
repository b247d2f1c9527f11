"""Acceptance: is a resource's spec one the operator can act on?

Every kind goes through it first: the spec is parsed with the kind's model (the
same one the CRD was generated from, so a spec the API server admitted normally
parses) and the result is recorded as the `Accepted` condition, together with
`observedGeneration` and the kind's first phase. Pure: no I/O, clock injected.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from kubetune.api.common import ConditionStatus, StatusBase
from kubetune.conditions import set_condition
from kubetune.errors import InvalidSpec

ACCEPTED = "Accepted"

M = TypeVar("M", bound=BaseModel)
S = TypeVar("S", bound=StatusBase)


def parse_spec(model: type[M], spec: Mapping[str, Any]) -> M:
    """The spec as its model, or InvalidSpec listing every problem with its field path."""
    try:
        return model.model_validate(dict(spec))
    except ValidationError as e:
        problems = "; ".join(
            f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise InvalidSpec(problems) from e


def next_status(
    old: S,
    *,
    problem: str | None,
    generation: int,
    now: datetime,
    first_phase: str,
    rejected_phase: str | None,
) -> S:
    """The status after checking a spec: `problem` is None when the spec is valid.

    A valid spec sets the kind's first phase only if no phase is set yet, so a
    resource that is further along never goes back; an invalid one moves to
    `rejected_phase` when the kind has one.
    """
    phase: str | None
    if problem is None:
        conditions = set_condition(
            old.conditions,
            ACCEPTED,
            ConditionStatus.TRUE,
            "Accepted",
            "The spec is valid.",
            generation=generation,
            now=now,
        )
        phase = old.phase or first_phase
    else:
        conditions = set_condition(
            old.conditions,
            ACCEPTED,
            ConditionStatus.FALSE,
            "InvalidSpec",
            problem,
            generation=generation,
            now=now,
        )
        phase = rejected_phase or old.phase
    # Validated anew, so that `phase` becomes the kind's enum member.
    return type(old).model_validate(
        {
            **old.model_dump(),
            "conditions": conditions,
            "observed_generation": generation,
            "phase": phase,
        }
    )
