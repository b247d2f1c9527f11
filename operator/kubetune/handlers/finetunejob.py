"""Kopf adapters for FineTuneJob with the local backend.

On create, update and resume, Kopf's handler only queues the job's key
(workqueue.py); a worker then accepts the spec and makes sure the one training Job
exists (its name is the FineTuneJob's, so a restart, a lost response or a duplicate
event finds it instead of creating a second) and follows `suspend`. Kopf holds each
event's body until its handlers return, with no limit on how many wait: a burst of
thousands of new jobs waits in the queue as keys instead (docs/performance.md).
The training Jobs and pods are watched by our own informers (informer.py), not by
Kopf: the API server filters them by label, each event only updates a slim view
(children.py) and queues its job's key once however many events come (workqueue.py),
and a worker then drives the status through reconcile/finetunejob.py; success
registers the FineTunedModel. An observation equal to the one this process last
wrote for that job is skipped without a read: most Job and pod events (a node bound,
a condition's probe time) observe the same thing again (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kopf

from kubetune import events
from kubetune.api.common import GROUP, VERSION, Backend
from kubetune.api.finetunejob import FineTuneJobPhase, FineTuneJobSpec, FineTuneJobStatus
from kubetune.api.kinds import FINETUNEDMODEL, FINETUNEJOB
from kubetune.backends.local.manifests import (
    FINETUNEJOB_LABEL,
    MODEL_PROTECTION,
    QUEUE_LABEL_PREFIX,
    build_finetuned_model,
    build_training_job,
)
from kubetune.configmapkeys import ConfigMapKeys
from kubetune.errors import BackendRejected, InvalidSpec, NotReady
from kubetune.handlers.acceptance import accept, post_transition
from kubetune.handlers.children import Children, Key
from kubetune.handlers.errors import RETRY_BACKOFF, queued
from kubetune.handlers.pollers import Pollers
from kubetune.handlers.status import StatusWriter
from kubetune.informer import Informer
from kubetune.k8s import Obj
from kubetune.metrics import FAILURES, JOBS_BY_PHASE, observe_reconcile
from kubetune.reconcile.finetunejob import (
    TERMINAL,
    Observed,
    is_settled,
    next_status,
    observe_training,
)
from kubetune.reconcile.inputs import (
    Resolved,
    Unusable,
    Waiting,
    age_seconds,
    inputs_status,
    referenced_config_maps,
    referenced_model,
    resolve_inputs,
)
from kubetune.settings import LocalSettings
from kubetune.tasks import cancel
from kubetune.workqueue import WorkQueue

log = logging.getLogger(__name__)

FTJ = (GROUP, VERSION, FINETUNEJOB.plural)
JOBS = ("batch/v1", "jobs")
PODS = ("v1", "pods")


async def register_model(memo: kopf.Memo, obj: Obj, manifest: Obj) -> str | None:
    """Create the FineTunedModel of a succeeded job (either backend) and record its name;
    returns the name, or None when another object already has it (a Warning says so)."""
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    # Protected from its first moment, and without a write of its own to add it.
    meta = {**manifest["metadata"], "finalizers": [MODEL_PROTECTION]}
    model, created = await memo.kube.create_custom(
        FINETUNEDMODEL.plural, namespace, {**manifest, "metadata": meta}
    )
    model_name = model["metadata"]["name"]
    if not created and (model.get("spec") or {}).get("sourceJob") != name:
        events.warn(
            obj,
            reason="ModelNameTaken",
            message=f"FineTunedModel {model_name} exists and was not made by this job; "
            "set spec.model to another name",
        )
        return None

    def record(_: Obj, old: FineTuneJobStatus) -> FineTuneJobStatus:
        return old.model_copy(update={"model": model_name})

    await memo.status.update(FINETUNEJOB.plural, namespace, name, FineTuneJobStatus, record)
    return str(model_name)


async def observe(
    memo: kopf.Memo, namespace: str, name: str, seen: Observed, **update: Any
) -> tuple[bool, FineTuneJobStatus | None]:
    """Fold an observation (and other status fields) into the status, with its log line
    and Event; returns (whether anything changed, the new status or None if gone)."""

    def fold(obj: Obj, old: FineTuneJobStatus) -> FineTuneJobStatus:
        generation = int(obj["metadata"].get("generation", 1))
        new = next_status(old, seen, generation=generation, now=datetime.now(UTC))
        return new.model_copy(update=update)

    change = await memo.status.update(FINETUNEJOB.plural, namespace, name, FineTuneJobStatus, fold)
    if change is None:
        return False, None
    post_transition(change, seen.reason, seen.message)
    return change.old != change.new, change.new


async def fail(memo: kopf.Memo, namespace: str, name: str, reason: str, message: str) -> None:
    """Record a failure found before (or instead of) training: the spec cannot be acted on."""
    FAILURES.labels(FINETUNEJOB.kind, reason).inc()
    await observe(memo, namespace, name, Observed(FineTuneJobPhase.FAILED, reason, message))


async def sync_status(
    memo: kopf.Memo,
    settings: LocalSettings,
    namespace: str,
    name: str,
    seen: Observed,
) -> bool:
    """Fold `seen` into the status; False when it was not (not accepted yet, not
    ours, or gone)."""
    writer: StatusWriter = memo.status
    folded = False

    def fold(obj: Obj, old: FineTuneJobStatus) -> FineTuneJobStatus:
        nonlocal folded
        if old.phase is None or (obj.get("spec") or {}).get("backend") != Backend.LOCAL:
            return old  # not accepted yet, or not ours
        folded = True
        generation = int(obj["metadata"].get("generation", 1))
        return next_status(old, seen, generation=generation, now=datetime.now(UTC))

    change = await writer.update(FINETUNEJOB.plural, namespace, name, FineTuneJobStatus, fold)
    if change is None:
        return False
    message = seen.message
    if change.new.phase is FineTuneJobPhase.SUCCEEDED and change.new.model is None:
        obj = change.obj
        spec = FineTuneJobSpec.model_validate(obj["spec"])
        manifest = build_finetuned_model(
            job_name=name,
            namespace=namespace,
            spec=spec,
            settings=settings,
            base_model=change.new.resolved_base_model,
        )
        model = await register_model(memo, obj, manifest)
        if model is not None:
            message = f"{message} Registered FineTunedModel {model}."
    # One Event per transition, the model's registration in the success's.
    post_transition(change, seen.reason if change.new.phase == seen.phase else None, message)
    return folded


async def sync_training(memo: kopf.Memo, settings: LocalSettings, key: Key) -> None:
    """A training Job or pod of this job changed (the watches `register` starts):
    bring the job's status up to date."""
    namespace, name = key
    children: Children = memo.children
    job = children.job(key)
    if key in children.finished or job is None:
        return  # finished (a terminal status never changes again), or no Job yet
    seen = observe_training(job, children.pods_of(key))
    if memo.applied.get(key) == seen:
        return  # already in the status: no read, no write
    pollers: Pollers = memo.pollers
    await pollers.peering.wait_turn(namespace)
    with observe_reconcile(FINETUNEJOB.kind, "training"):
        # Succeeded and the registered model's name in one write.
        async with memo.status.coalesce(FINETUNEJOB.plural, namespace, name):
            if memo.applied.get(key) == seen:
                return  # written by the reconcile this one waited for
            folded = await sync_status(memo, settings, namespace, name, seen)
    if folded and seen.phase not in TERMINAL:
        memo.applied[key] = seen  # written: the block above ended without raising


async def reconcile_job(memo: kopf.Memo, settings: LocalSettings, key: Key) -> float | None:
    """Accept the job's spec, then make sure its one training Job exists and follows
    `suspend`; returns the seconds after which to look again while its inputs are
    not there yet, else None."""
    namespace, name = key
    # A retry comes from the queue, not from Kopf, which would hold it while a peer
    # with a higher priority acts.
    pollers: Pollers = memo.pollers
    await pollers.peering.wait_turn(namespace)
    # This writes the status itself (acceptance, inputs): the next child event syncs
    # again unless the sync below completes.
    memo.applied.pop(key, None)

    async def work() -> None:
        with observe_reconcile(FINETUNEJOB.kind, "reconcile"):
            # One read and one status write for accepting, resolving inputs, creating
            # the Job and recording it (status.py).
            async with memo.status.coalesce(FINETUNEJOB.plural, namespace, name):
                seen = await ensure_training_job(memo, settings, key)
        if seen is not None and seen.phase not in TERMINAL:
            memo.applied[key] = seen  # written: the block above ended without raising

    return await queued(work(), f"{namespace}/{name}")


async def ensure_training_job(
    memo: kopf.Memo, settings: LocalSettings, key: Key
) -> Observed | None:
    """The body of `reconcile_job`; returns the observation it wrote, if any."""
    namespace, name = key
    change, parsed = await accept(memo.status, FINETUNEJOB, namespace, name)
    if change is None or not isinstance(parsed, FineTuneJobSpec):
        return None
    if parsed.backend is not Backend.LOCAL:
        return None
    meta = change.obj["metadata"]
    labels: dict[str, str] = dict(meta.get("labels") or {})
    children: Children = memo.children
    job, created = children.job(key), False
    seen: Observed | None = None
    if job is None:
        if change.new.phase in TERMINAL:
            return None  # finished; its Job was cleaned up, and must not run again
        resolved = await check_inputs(memo, settings, key, change.obj, parsed)
        if resolved is None:
            return None
        try:
            manifest = build_training_job(
                name=name,
                namespace=namespace,
                uid=meta["uid"],
                labels=labels,
                spec=parsed,
                settings=settings,
                continue_from=resolved.model,
            )
        except InvalidSpec as e:
            await fail(memo, namespace, name, "InvalidSpec", str(e))
            return None
        try:
            job, created = await memo.kube.create_job(namespace, manifest)
        except BackendRejected as e:
            await fail(memo, namespace, name, "JobRejected", str(e))
            return None
        if not any(
            r.get("uid") == meta["uid"] for r in job["metadata"].get("ownerReferences") or []
        ):
            message = f"a Job named {name} exists and is not this job's; rename one"
            await fail(memo, namespace, name, "JobNameTaken", message)
            return None

        def record(_: Obj, old: FineTuneJobStatus) -> FineTuneJobStatus:
            return old.model_copy(update={"job_name": name})

        await memo.status.update(FINETUNEJOB.plural, namespace, name, FineTuneJobStatus, record)
        if created:
            log.info("%s/%s: created training Job %s", namespace, name, name)
            # Waiting for its pod, in the same write as the acceptance. A Job that
            # existed (made before a restart) syncs from its own events.
            seen = observe_training(job, [])
            if not await sync_status(memo, settings, namespace, name, seen):
                seen = None
    if not created and change.new.phase not in TERMINAL:
        await follow_suspend(memo, namespace, name, job, parsed, labels)
    return seen


async def check_inputs(
    memo: kopf.Memo, settings: LocalSettings, key: Key, obj: Obj, spec: FineTuneJobSpec
) -> Resolved | None:
    """The job's dataset ConfigMaps and model:// base, resolved (reconcile/inputs.py):
    None when the job failed; raises NotReady (a retry) while it waits for them."""
    namespace, name = key
    dataset_keys: ConfigMapKeys = memo.dataset_keys
    config_maps = {
        cm: await dataset_keys.keys(namespace, cm)
        for cm, _ in referenced_config_maps(spec).values()
    }
    wanted = referenced_model(spec)
    model = await memo.kube.get_custom(FINETUNEDMODEL.plural, namespace, wanted) if wanted else None
    now = datetime.now(UTC)
    resolution = resolve_inputs(
        spec,
        name=name,
        namespace=namespace,
        config_maps=config_maps,
        model=model,
        age=age_seconds(obj["metadata"].get("creationTimestamp"), now),
        timeout=settings.reference_timeout,
    )
    if isinstance(resolution, Unusable):
        await fail(memo, namespace, name, resolution.reason, resolution.message)
        return None

    def record(current: Obj, old: FineTuneJobStatus) -> FineTuneJobStatus:
        generation = int(current["metadata"].get("generation", 1))
        return inputs_status(old, resolution, generation=generation, now=now)

    await memo.status.update(FINETUNEJOB.plural, namespace, name, FineTuneJobStatus, record)
    if isinstance(resolution, Waiting):
        raise NotReady(resolution.message, retry_after=resolution.retry_after)
    return resolution


async def follow_suspend(
    memo: kopf.Memo,
    namespace: str,
    name: str,
    job: Obj,
    spec: FineTuneJobSpec,
    labels: dict[str, str],
) -> None:
    """spec.suspend onto the Job; with a Kueue queue, only suspending is ours to do."""
    kueue = any(k.startswith(QUEUE_LABEL_PREFIX) for k in labels)
    current = bool(job["spec"].get("suspend"))
    if current != spec.suspend and (spec.suspend or not kueue):
        await memo.kube.patch_job(namespace, name, {"spec": {"suspend": spec.suspend}})


def register(registry: kopf.OperatorRegistry, settings: LocalSettings) -> None:
    @kopf.on.resume(*FTJ, id="reconcile", registry=registry)
    @kopf.on.update(*FTJ, id="reconcile", registry=registry)
    @kopf.on.create(*FTJ, id="reconcile", registry=registry)
    async def reconcile(
        name: str, namespace: str, meta: kopf.Meta, status: kopf.Status, memo: kopf.Memo, **_: Any
    ) -> None:
        """Queue the job for `reconcile_job` unless it is settled (a restart's resume of a
        finished job)."""
        if not is_settled(meta, status):
            memo.reconciles.add((namespace, name))

    @kopf.on.startup(registry=registry, id="training_watches")
    async def watch_training(memo: kopf.Memo, **_: Any) -> None:
        """Start the reconcile queue, and watch the training Jobs and pods (ours by label,
        filtered by the API server) into the children view, syncing each job whose
        children changed; returns once the first lists are in, so no reconcile misses a
        Job that exists."""
        # The observation last folded into each unfinished job's status by this
        # process. Folding the same observation again changes nothing (next_status is
        # idempotent), so an equal one is skipped. Empty after a restart: the first
        # event syncs.
        memo.applied = {}
        memo.reconciles = WorkQueue(
            functools.partial(reconcile_job, memo, settings),
            workers=memo.workers,
            retry_after=RETRY_BACKOFF,
        )
        children: Children = memo.children
        queue: WorkQueue[Key] = WorkQueue(
            functools.partial(sync_training, memo, settings),
            workers=memo.workers,
            retry_after=RETRY_BACKOFF,
        )

        def on_event(plural: str) -> Callable[[str, Obj], None]:
            return lambda event, obj: queue.add(children.saw(plural, event, obj))

        def on_listed(plural: str) -> Callable[[str | None, set[tuple[str, str]]], None]:
            def listed(namespace: str | None, names: set[tuple[str, str]]) -> None:
                for key in children.listed(plural, namespace, names):
                    queue.add(key)

            return listed

        informers = [
            Informer(
                memo.kube,
                api_version,
                plural,
                namespace,
                selector=FINETUNEJOB_LABEL,
                on_event=on_event(plural),
                on_listed=on_listed(plural),
            )
            for api_version, plural in (JOBS, PODS)
            for namespace in memo.namespaces or (None,)
        ]
        memo.training = (queue, [asyncio.ensure_future(i.run()) for i in informers])
        await asyncio.gather(*(i.synced.wait() for i in informers))

    @kopf.on.cleanup(registry=registry, id="training_watches")
    async def stop_training_watches(memo: kopf.Memo, **_: Any) -> None:
        queue, informers = memo.training
        await cancel(informers)
        await queue.close()
        await memo.reconciles.close()

    @kopf.on.event(*FTJ, registry=registry, id="count_phases")
    async def count_phases(
        event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any
    ) -> None:
        """Jobs by backend and phase, for /metrics: moved from the old key to the new one."""
        meta = body["metadata"]
        before = memo.phases.pop(meta.get("uid"), None)
        if before is not None:
            JOBS_BY_PHASE.labels(*before).dec()
        key = (meta.get("namespace"), meta["name"])
        memo.status.saw(FINETUNEJOB.plural, event["type"], body)
        if event["type"] == "DELETED":
            memo.children.forget(key)
            memo.applied.pop(key, None)
            return
        after = (
            body.get("spec", {}).get("backend", "local"),
            body.get("status", {}).get("phase") or "",
        )
        if after[1] in TERMINAL:
            memo.children.finish(key)
            memo.applied.pop(key, None)
        memo.phases[meta.get("uid")] = after
        JOBS_BY_PHASE.labels(*after).inc()
