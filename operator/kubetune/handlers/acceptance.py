"""Acceptance, shared by every kind's handlers: parse the spec, record the
`Accepted` condition, `observedGeneration` and the kind's first phase, and post an
Event when the phase changes."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import BaseModel

from kubetune.api.kinds import FINETUNEDMODEL, FINETUNEJOB, MODELDEPLOYMENT, ResourceKind
from kubetune.errors import InvalidSpec
from kubetune.handlers.status import Change, StatusWriter
from kubetune.k8s import Obj
from kubetune.reconcile.acceptance import next_status, parse_spec

log = logging.getLogger(__name__)

# (first phase, phase of a rejected spec) per kind.
PHASES: dict[str, tuple[str, str | None]] = {
    FINETUNEJOB.kind: ("Pending", "Failed"),
    FINETUNEDMODEL.kind: ("Ready", None),
    MODELDEPLOYMENT.kind: ("WaitingForModel", "Failed"),
}


# Phases on the way to success: in the status and the log, without an Event. Events
# say what the operator did (JobCreated, ModelCreated: "training succeeded; registered
# ...") and what needs a look (failures, waiting for a node, suspension, blocked
# deletion), as the Kubernetes Job controller posts SuccessfulCreate and Completed
# but nothing when a pod starts: an Event is an API write (docs/performance.md).
QUIET: dict[str, frozenset[str]] = {
    FINETUNEJOB.kind: frozenset({"Pending", "Running", "Succeeded"}),
    FINETUNEDMODEL.kind: frozenset({"Ready"}),
    MODELDEPLOYMENT.kind: frozenset({"WaitingForModel"}),
}


def post_transition(change: Change[Any], reason: str | None = None, message: str = "") -> None:
    """A log line for a phase change, and an Event unless the phase is QUIET: Warning
    for failures, Normal otherwise."""
    if not change.phase_changed:
        return
    phase = str(change.new.phase)
    text = message or f"Phase is now {phase}"
    meta = change.obj["metadata"]
    log.info(
        "%s/%s kind=%s phase=%s reason=%s message=%s",
        meta.get("namespace"),
        meta["name"],
        change.obj.get("kind"),
        phase,
        reason or phase,
        json.dumps(text),
    )
    if phase in ("Failed", "DeletionBlocked"):
        kopf.warn(change.obj, reason=reason or phase, message=text)
    elif phase not in QUIET.get(str(change.obj.get("kind")), ()):
        kopf.info(change.obj, reason=reason or phase, message=text)


async def accept(
    writer: StatusWriter, kind: ResourceKind, namespace: str, name: str
) -> tuple[Change[Any] | None, BaseModel | None]:
    """Check the current spec; returns the status change and the parsed spec (None if invalid)."""
    first_phase, rejected_phase = PHASES[kind.kind]
    parsed: list[BaseModel] = []
    problems: list[str] = []

    def check(obj: Obj, old: Any) -> Any:
        try:
            parsed.append(parse_spec(kind.spec, obj.get("spec") or {}))
        except InvalidSpec as e:
            problems.append(str(e))
        return next_status(
            old,
            problem=problems[0] if problems else None,
            generation=int(obj["metadata"].get("generation", 1)),
            now=datetime.now(UTC),
            first_phase=first_phase,
            rejected_phase=rejected_phase,
        )

    change = await writer.update(kind.plural, namespace, name, kind.status, check)
    if change is not None:
        if problems:
            kopf.warn(change.obj, reason="InvalidSpec", message=problems[0])
        else:
            post_transition(change)
    return change, (parsed[0] if parsed else None)
