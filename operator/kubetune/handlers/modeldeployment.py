"""Kopf adapters for ModelDeployment with the local backend.

A deployment waits in WaitingForModel until its FineTunedModel is Ready (any
event of the model wakes it), then owns a Deployment and a Service running the
chosen runtime, and reports Deploying → Ready from the Deployment's availability,
or Failed when its rollout cannot progress.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import kopf

from kubetune.api.common import GROUP, VERSION, Backend, ConditionStatus
from kubetune.api.finetunedmodel import FineTunedModelPhase, FineTunedModelSpec
from kubetune.api.kinds import FINETUNEDMODEL, MODELDEPLOYMENT
from kubetune.api.modeldeployment import (
    ModelDeploymentPhase,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
)
from kubetune.backends.local.manifests import (
    DEPLOYMENT_LABEL,
    build_serving_deployment,
    build_serving_service,
    serving_endpoint,
)
from kubetune.conditions import set_condition
from kubetune.handlers.acceptance import accept, post_transition
from kubetune.handlers.errors import kopf_errors
from kubetune.k8s import Obj
from kubetune.metrics import observe_reconcile
from kubetune.settings import LocalSettings

MDEP = (GROUP, VERSION, MODELDEPLOYMENT.plural)
FTM = (GROUP, VERSION, FINETUNEDMODEL.plural)
DEPLOYMENTS = ("apps", "v1", "deployments")
SPEC_HASH = "kubetune.io/spec-hash"
SERVABLE = (FineTunedModelPhase.READY, FineTunedModelPhase.IN_USE)


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

    def with_phase(
        base: ModelDeploymentStatus,
        phase: ModelDeploymentPhase,
        ctype: str,
        ok: bool,
        reason: str,
        msg: str,
    ) -> ModelDeploymentStatus:
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

    phase = (model or {}).get("status", {}).get("phase")
    if model is None or phase not in SERVABLE or model["metadata"].get("deletionTimestamp"):
        why = "does not exist" if model is None else f"is {phase or 'not ready'}"
        return with_phase(
            old,
            ModelDeploymentPhase.WAITING_FOR_MODEL,
            "ModelReady",
            False,
            "ModelNotReady",
            f"FineTunedModel {model_name} {why}",
        )
    old = old.model_copy(
        update={
            "conditions": set_condition(
                old.conditions,
                "ModelReady",
                ConditionStatus.TRUE,
                "ModelReady",
                f"FineTunedModel {model_name} is {phase}",
                generation=generation,
                now=now,
            )
        }
    )
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
        )
    return with_phase(
        base,
        ModelDeploymentPhase.DEPLOYING,
        "Available",
        False,
        "Deploying",
        f"{ready}/{replicas} replicas ready",
    )


def _spec_hash(manifest: Obj) -> str:
    return hashlib.sha256(json.dumps(manifest["spec"], sort_keys=True).encode()).hexdigest()[:16]


def register(registry: kopf.OperatorRegistry, settings: LocalSettings) -> None:
    @kopf.index(
        *DEPLOYMENTS, labels={DEPLOYMENT_LABEL: kopf.PRESENT}, registry=registry, id="serving"
    )
    def serving(
        namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any
    ) -> dict[tuple[str | None, str | None], Any]:
        return {
            (namespace, labels[DEPLOYMENT_LABEL]): {
                "hash": body["metadata"].get("annotations", {}).get(SPEC_HASH),
                "status": dict(body.get("status") or {}),
            }
        }

    async def sync(
        memo: kopf.Memo, namespace: str, name: str, serving: kopf.Index[Any, Obj]
    ) -> None:
        def current(key: tuple[str, str]) -> Obj | None:
            return next(iter(serving.get(key, [])), None)

        async def fold(obj: Obj, old: ModelDeploymentStatus) -> ModelDeploymentStatus:
            if old.phase is None:
                return old  # not accepted yet
            spec = ModelDeploymentSpec.model_validate(obj["spec"])
            if spec.backend is not Backend.LOCAL:
                return old
            model_name = spec.model_ref.name
            model = await memo.kube.get_custom(FINETUNEDMODEL.plural, namespace, model_name)
            deployment = current((namespace, name))
            phase = (model or {}).get("status", {}).get("phase")
            if model is not None and phase in SERVABLE:
                manifest = build_serving_deployment(
                    name=name,
                    namespace=namespace,
                    uid=obj["metadata"]["uid"],
                    spec=spec,
                    model_name=model_name,
                    model=FineTunedModelSpec.model_validate(model["spec"]),
                    settings=settings,
                )
                digest = _spec_hash(manifest)
                if deployment is None or deployment.get("hash") != digest:
                    manifest["metadata"]["annotations"] = {SPEC_HASH: digest}
                    created = await memo.kube.apply_deployment(namespace, manifest)
                    await memo.kube.create_service(
                        namespace,
                        build_serving_service(
                            name=name, namespace=namespace, uid=obj["metadata"]["uid"]
                        ),
                    )
                    deployment = {"status": created.get("status") or {}}
            replicas = spec.local.replicas if spec.local else 1
            return serving_state(
                old,
                model=model,
                model_name=model_name,
                deployment=deployment,
                replicas=replicas,
                endpoint=serving_endpoint(name, namespace),
                generation=int(obj["metadata"].get("generation", 1)),
                now=datetime.now(UTC),
            )

        change = await memo.status.update(
            MODELDEPLOYMENT.plural, namespace, name, ModelDeploymentStatus, fold
        )
        if change is not None:
            post_transition(change)

    @kopf.on.resume(*MDEP, id="reconcile", registry=registry)
    @kopf.on.update(*MDEP, id="reconcile", registry=registry)
    @kopf.on.create(*MDEP, id="reconcile", registry=registry)
    async def reconcile(
        name: str, namespace: str, memo: kopf.Memo, serving: kopf.Index[Any, Obj], **_: Any
    ) -> None:
        with observe_reconcile(MODELDEPLOYMENT.kind, "reconcile"), kopf_errors():
            await accept(memo.status, MODELDEPLOYMENT, namespace, name)
            await sync(memo, namespace, name, serving)

    @kopf.on.event(*FTM, registry=registry, id="model_changed")
    async def model_changed(
        namespace: str,
        name: str,
        memo: kopf.Memo,
        serving: kopf.Index[Any, Obj],
        deployments_by_model: kopf.Index[Any, str],
        **_: Any,
    ) -> None:
        for deployment in sorted(deployments_by_model.get((namespace, name), [])):
            with observe_reconcile(MODELDEPLOYMENT.kind, "model-event"), kopf_errors():
                await sync(memo, namespace, deployment, serving)

    @kopf.on.event(
        *DEPLOYMENTS, labels={DEPLOYMENT_LABEL: kopf.PRESENT}, registry=registry, id="serving_event"
    )
    async def serving_event(
        namespace: str,
        labels: kopf.Labels,
        memo: kopf.Memo,
        serving: kopf.Index[Any, Obj],
        **_: Any,
    ) -> None:
        with observe_reconcile(MODELDEPLOYMENT.kind, "deployment-event"), kopf_errors():
            await sync(memo, namespace, labels[DEPLOYMENT_LABEL], serving)

    @kopf.on.event(*MDEP, registry=registry, id="forget")
    def forget(event: kopf.RawEvent, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
        if event["type"] == "DELETED":
            memo.status.forget(MODELDEPLOYMENT.plural, namespace, name)
