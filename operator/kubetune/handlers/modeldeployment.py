"""Kopf adapters for ModelDeployment with the local backend.

A deployment waits in WaitingForModel until its FineTunedModel is Ready (any
event of the model wakes it), then owns a Deployment and a Service running the
chosen runtime, and reports Deploying → Ready from the Deployment's availability,
or Failed when its rollout cannot progress.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from kubetune.api.common import GROUP, VERSION, Backend
from kubetune.api.finetunedmodel import FineTunedModelSpec
from kubetune.api.kinds import FINETUNEDMODEL, MODELDEPLOYMENT
from kubetune.api.modeldeployment import (
    ModelDeploymentSpec,
    ModelDeploymentStatus,
)
from kubetune.backends.local.manifests import (
    DEPLOYMENT_LABEL,
    SPEC_HASH,
    build_serving_deployment,
    build_serving_service,
    serving_endpoint,
)
from kubetune.handlers.acceptance import accept, post_transition
from kubetune.handlers.errors import RETRY_BACKOFF, kopf_errors
from kubetune.k8s import Obj
from kubetune.metrics import observe_reconcile
from kubetune.reconcile.modeldeployment import SERVABLE, serving_state
from kubetune.settings import LocalSettings

MDEP = (GROUP, VERSION, MODELDEPLOYMENT.plural)
FTM = (GROUP, VERSION, FINETUNEDMODEL.plural)
DEPLOYMENTS = ("apps", "v1", "deployments")


def register(registry: kopf.OperatorRegistry, settings: LocalSettings) -> None:
    @kopf.index(
        *DEPLOYMENTS, labels={DEPLOYMENT_LABEL: kopf.PRESENT}, registry=registry, id="serving"
    )
    async def serving(
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
                digest = manifest["metadata"]["annotations"][SPEC_HASH]
                if deployment is None or deployment.get("hash") != digest:
                    # The Service first: a Deployment that exists implies its Service
                    # does, even if the operator dies between the two creates.
                    await memo.kube.create_service(
                        namespace,
                        build_serving_service(
                            name=name, namespace=namespace, uid=obj["metadata"]["uid"]
                        ),
                    )
                    created = await memo.kube.apply_deployment(namespace, manifest)
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

    @kopf.on.resume(*MDEP, id="reconcile", backoff=RETRY_BACKOFF, registry=registry)
    @kopf.on.update(*MDEP, id="reconcile", backoff=RETRY_BACKOFF, registry=registry)
    @kopf.on.create(*MDEP, id="reconcile", backoff=RETRY_BACKOFF, registry=registry)
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

    @kopf.on.event(*MDEP, registry=registry, id="seen")
    async def seen(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        memo.status.saw(MODELDEPLOYMENT.plural, event["type"], body)
