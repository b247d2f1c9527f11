"""Kopf adapters for FineTunedModel, and the rule: a model cannot be deleted while a
ModelDeployment of it exists, nor while a FineTuneJob continues training from it.

Every model carries the finalizer `kubetune.io/model-protection`. When a model is
deleted, the finalizer stays while any ModelDeployment references it, or any
unfinished FineTuneJob has `baseModel: model://<it>` (phase DeletionBlocked, a
condition and a Warning event naming them): a cleanup of its adapter would pull it
from under the training. Any event of a deployment or of the model, and the end of
such a job, re-checks, so the deletion completes by itself as soon as the last user
is gone, in whatever order things were deleted. With
`deletionPolicy: Delete` a cleanup Job removes the adapter first. The annotation
`kubetune.io/force-delete: "true"` releases the finalizer at once, and a
terminating namespace is never held up.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import kopf

from kubetune import events
from kubetune.api.common import API_VERSION, GROUP, VERSION
from kubetune.api.finetunedmodel import (
    DeletionPolicy,
    FineTunedModelPhase,
    FineTunedModelSpec,
    FineTunedModelStatus,
)
from kubetune.api.kinds import FINETUNEDMODEL, FINETUNEJOB, MODELDEPLOYMENT
from kubetune.backends.foundry import ModelInUse
from kubetune.backends.local.manifests import MODEL_LABEL, MODEL_PROTECTION, build_cleanup_job
from kubetune.handlers.acceptance import accept, post_transition
from kubetune.handlers.children import Children
from kubetune.handlers.errors import RETRY_BACKOFF, kopf_errors
from kubetune.handlers.foundry import delete_azure_model
from kubetune.k8s import Obj, path
from kubetune.metrics import observe_reconcile
from kubetune.reconcile.finetunedmodel import BLOCKED, blocked_message, usage_status
from kubetune.reconcile.inputs import model_reference
from kubetune.settings import LocalSettings

FTM = (GROUP, VERSION, FINETUNEDMODEL.plural)
MDEP = (GROUP, VERSION, MODELDEPLOYMENT.plural)
FTJ = (GROUP, VERSION, FINETUNEJOB.plural)
CLEANUP_JOBS = ("batch", "v1", "jobs")
PROTECTION = MODEL_PROTECTION
FORCE_DELETE = "kubetune.io/force-delete"


def model_of(spec: Any) -> str | None:
    ref = (spec or {}).get("modelRef") or {}
    name = ref.get("name")
    return str(name) if name else None


def continues_a_model(spec: kopf.Spec, **_: Any) -> bool:
    """A FineTuneJob with `baseModel: model://<name>`."""
    return model_reference(str(spec.get("baseModel") or "")) is not None


def register(registry: kopf.OperatorRegistry, settings: LocalSettings) -> None:
    @kopf.index(*MDEP, registry=registry, id="deployments_by_model")
    async def deployments_by_model(
        namespace: str, name: str, spec: kopf.Spec, **_: Any
    ) -> dict[tuple[str | None, str | None], Any]:
        return {(namespace, model_of(spec)): name}

    async def sync(
        memo: kopf.Memo, namespace: str, name: str, by_model: kopf.Index[Any, str]
    ) -> None:
        """Bring status.deployments and the phase up to date; finish a deletion if allowed."""
        users = sorted(by_model.get((namespace, name), []))
        children: Children = memo.children
        trainers = children.trains_from(namespace, name)

        def fold(obj: Obj, old: FineTunedModelStatus) -> FineTunedModelStatus:
            deleting = bool(obj["metadata"].get("deletionTimestamp"))
            return usage_status(
                old, users, deleting=deleting, now=datetime.now(UTC), trainers=trainers
            )

        change = await memo.status.update(
            FINETUNEDMODEL.plural, namespace, name, FineTunedModelStatus, fold
        )
        if change is None:
            return
        if change.new.phase is FineTunedModelPhase.DELETION_BLOCKED:
            post_transition(change, BLOCKED, blocked_message(users, trainers))
        if change.obj["metadata"].get("deletionTimestamp"):
            await finish_deletion(memo, change.obj)

    async def finish_deletion(memo: kopf.Memo, obj: Obj) -> None:
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        children: Children = memo.children
        if PROTECTION not in (meta.get("finalizers") or []):
            return
        if (meta.get("annotations") or {}).get(FORCE_DELETE) == "true":
            events.warn(
                obj,
                reason="ForceDeleted",
                message=f"{FORCE_DELETE} is set: deleting "
                "without waiting for deployments or cleanup",
            )
            await release(memo, obj)
            return
        ns = await memo.kube.get_namespace(namespace)
        terminating = ns is None or (ns.get("status") or {}).get("phase") == "Terminating"
        # The index may lag a just-created deployment: ask the API server.
        users = sorted(
            m["metadata"]["name"]
            for m in await memo.kube.list_custom(MODELDEPLOYMENT.plural, namespace)
            if model_of(m.get("spec")) == name
        )
        if (users or children.trains_from(namespace, name)) and not terminating:
            return
        spec = FineTunedModelSpec.model_validate(obj["spec"])
        if (
            spec.deletion_policy is DeletionPolicy.DELETE
            and spec.source.azure_model_id is not None
            and not terminating
        ):
            if (namespace, name) in memo.rechecks:
                return  # Azure refused a moment ago; the scheduled retry asks again
            try:
                await delete_azure_model(memo, obj)
            except ModelInUse as e:
                recheck_later(
                    memo,
                    namespace,
                    name,
                    min(e.retry_after, memo.foundry_settings.max_poll_interval),
                )
                return
        source = spec.source.pvc
        if spec.deletion_policy is DeletionPolicy.DELETE and source is not None and not terminating:
            manifest = build_cleanup_job(
                name=name, namespace=namespace, uid=meta["uid"], source=source, settings=settings
            )
            job, created = await memo.kube.create_job(namespace, manifest)
            if created:
                events.info(
                    obj,
                    reason="CleanupStarted",
                    message=f"Job {manifest['metadata']['name']} deletes the adapter",
                )
            conditions = {
                c["type"]: c["status"] for c in (job.get("status") or {}).get("conditions") or []
            }
            if conditions.get("Failed") == "True":
                events.warn(
                    obj,
                    reason="CleanupFailed",
                    message=f"Job {job['metadata']['name']} "
                    f"could not delete the adapter; fix it or set {FORCE_DELETE}",
                )
            if conditions.get("Complete") != "True":
                return
        await release(memo, obj)

    def recheck_later(memo: kopf.Memo, namespace: str, name: str, delay: float) -> None:
        """Try the deletion again in `delay` seconds: nothing in Kubernetes will change
        when Azure stops refusing, so no event would bring us back."""

        async def recheck() -> None:
            with observe_reconcile(FINETUNEDMODEL.kind, "deletion-retry"), kopf_errors():
                model = await memo.kube.get_custom(FINETUNEDMODEL.plural, namespace, name)
                if model is not None and model["metadata"].get("deletionTimestamp"):
                    await finish_deletion(memo, model)

        def start() -> None:
            memo.rechecks.pop((namespace, name), None)
            memo.background.add(task := asyncio.ensure_future(recheck()))
            task.add_done_callback(memo.background.discard)

        if (namespace, name) not in memo.rechecks:
            memo.rechecks[(namespace, name)] = asyncio.get_running_loop().call_later(delay, start)

    async def release(memo: kopf.Memo, obj: Obj) -> None:
        meta = obj["metadata"]
        url = path(API_VERSION, FINETUNEDMODEL.plural, meta["namespace"], meta["name"])
        await memo.kube.set_finalizer(url, PROTECTION, present=False)

    # No resume: a model whose status observed its generation needs nothing after a
    # restart (deployments re-listed on the watch re-check its usage), and one that
    # did not is handled as new (bookkeeping.py); a restart reads no model.
    @kopf.on.update(*FTM, id="reconcile", backoff=RETRY_BACKOFF, registry=registry)
    @kopf.on.create(*FTM, id="reconcile", backoff=RETRY_BACKOFF, registry=registry)
    async def reconcile(
        name: str,
        namespace: str,
        meta: kopf.Meta,
        memo: kopf.Memo,
        deployments_by_model: kopf.Index[Any, str],
        **_: Any,
    ) -> None:
        with observe_reconcile(FINETUNEDMODEL.kind, "reconcile"), kopf_errors():
            if PROTECTION not in (meta.get("finalizers") or []) and not meta.get(
                "deletionTimestamp"
            ):
                url = path(API_VERSION, FINETUNEDMODEL.plural, namespace, name)
                await memo.kube.set_finalizer(url, PROTECTION, present=True)
            # One read and at most one status write for both (status.py).
            async with memo.status.coalesce(FINETUNEDMODEL.plural, namespace, name):
                await accept(memo.status, FINETUNEDMODEL, namespace, name)
                await sync(memo, namespace, name, deployments_by_model)

    @kopf.on.event(*FTM, registry=registry, id="model_event")
    async def model_event(
        event: kopf.RawEvent,
        name: str,
        namespace: str,
        meta: kopf.Meta,
        body: kopf.Body,
        memo: kopf.Memo,
        deployments_by_model: kopf.Index[Any, str],
        **_: Any,
    ) -> None:
        memo.status.saw(FINETUNEDMODEL.plural, event["type"], body)
        if event["type"] != "DELETED" and meta.get("deletionTimestamp"):
            with observe_reconcile(FINETUNEDMODEL.kind, "deletion"):
                await sync(memo, namespace, name, deployments_by_model)

    @kopf.on.event(*MDEP, registry=registry, id="deployment_event")
    async def deployment_event(
        event: kopf.RawEvent,
        namespace: str,
        spec: kopf.Spec,
        memo: kopf.Memo,
        deployments_by_model: kopf.Index[Any, str],
        **_: Any,
    ) -> None:
        model = model_of(spec)
        if model:
            with observe_reconcile(FINETUNEDMODEL.kind, "usage"):
                await sync(memo, namespace, model, deployments_by_model)

    # baseModel is immutable: a job matches the filter from its creation to its deletion.
    @kopf.on.event(*FTJ, registry=registry, id="trainer_event", when=continues_a_model)
    async def trainer_event(
        event: kopf.RawEvent,
        name: str,
        namespace: str,
        spec: kopf.Spec,
        status: kopf.Status,
        memo: kopf.Memo,
        deployments_by_model: kopf.Index[Any, str],
        **_: Any,
    ) -> None:
        """Keep track of the jobs that continue from a model; when one ends (or is
        deleted), a deletion of that model it held up may go on."""
        children: Children = memo.children
        model = children.saw_trainer(
            (namespace, name),
            spec.get("baseModel"),
            status.get("phase"),
            deleted=event["type"] == "DELETED",
        )
        if model is None:
            return  # still training, or ended before (a later event, a restart's listing)
        with observe_reconcile(FINETUNEDMODEL.kind, "usage"):
            found = await memo.kube.get_custom(FINETUNEDMODEL.plural, namespace, model)
            if found is not None and found["metadata"].get("deletionTimestamp"):
                await sync(memo, namespace, model, deployments_by_model)

    @kopf.on.event(
        *CLEANUP_JOBS, labels={MODEL_LABEL: kopf.PRESENT}, registry=registry, id="cleanup_event"
    )
    async def cleanup_event(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
        model = await memo.kube.get_custom(FINETUNEDMODEL.plural, namespace, labels[MODEL_LABEL])
        if model is not None and model["metadata"].get("deletionTimestamp"):
            await finish_deletion(memo, model)
