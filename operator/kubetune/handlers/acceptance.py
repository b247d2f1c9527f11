"""Kopf adapter for acceptance: every kind's spec is checked on create, update and resume."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from kubetune.api.common import GROUP, VERSION
from kubetune.api.kinds import FINETUNEDMODEL, FINETUNEJOB, MODELDEPLOYMENT, ResourceKind
from kubetune.errors import InvalidSpec
from kubetune.metrics import observe_reconcile
from kubetune.reconcile.acceptance import next_status, parse_spec

# (first phase, phase of a rejected spec) per kind.
PHASES: dict[str, tuple[str, str | None]] = {
    FINETUNEJOB.kind: ("Pending", "Failed"),
    FINETUNEDMODEL.kind: ("Ready", None),
    MODELDEPLOYMENT.kind: ("WaitingForModel", "Failed"),
}


def register(registry: kopf.OperatorRegistry, kind: ResourceKind) -> None:
    first_phase, rejected_phase = PHASES[kind.kind]

    async def accept(
        body: kopf.Body,
        spec: kopf.Spec,
        status: kopf.Status,
        meta: kopf.Meta,
        patch: kopf.Patch,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        with observe_reconcile(kind.kind, "accept"):
            problem = None
            try:
                parse_spec(kind.spec, spec)
            except InvalidSpec as e:
                problem = str(e)
            old = kind.status.model_validate(dict(status))
            new = next_status(
                old,
                problem=problem,
                generation=int(meta["generation"]),
                now=datetime.now(UTC),
                first_phase=first_phase,
                rejected_phase=rejected_phase,
            )
            patch.status.update(new.model_dump(mode="json", by_alias=True, exclude_none=True))
            if problem:
                logger.warning("Spec rejected: %s", problem)
                kopf.warn(body, reason="InvalidSpec", message=problem)
            elif old.phase != new.phase:
                logger.info("phase=%s", new.phase)
                kopf.info(body, reason=str(new.phase), message=f"Phase is now {new.phase}")

    resource = (GROUP, VERSION, kind.plural)
    for on in (kopf.on.create, kopf.on.update, kopf.on.resume):
        on(*resource, id="accept", registry=registry)(accept)
