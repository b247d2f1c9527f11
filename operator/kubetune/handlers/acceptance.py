"""Acceptance, shared by every kind's handlers: parse the spec, record the
`Accepted` condition, `observedGeneration` and the kind's first phase, and post an
Event when the phase changes."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from kubetune import events
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


# A kind's first phase, set when its spec is accepted: in the status and the log, not
# an Event (an Event is an API write; docs/performance.md). Every later transition
# posts one, which also says what the operator did: the training pod and node when a
# job runs, the registered model when it succeeds.
QUIET: dict[str, str] = {
    FINETUNEJOB.kind: "Pending",
    FINETUNEDMODEL.kind: "Ready",
    MODELDEPLOYMENT.kind: "WaitingForModel",
}


def post_transition(change: Change[Any], reason: str | None = None, message: str = "") -> None:
    """A log line for a phase change, and an Event unless it is the first (QUIET):
    Warning for failures, Normal otherwise."""
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
        events.warn(change.obj, reason=reason or phase, message=text)
    elif change.old.phase is not None or phase != QUIET.get(str(change.obj.get("kind"))):
        events.info(change.obj, reason=reason or phase, message=text)


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
            events.warn(change.obj, reason="InvalidSpec", message=problems[0])
        else:
            post_transition(change)
    return change, (parsed[0] if parsed else None)
