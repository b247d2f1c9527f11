"""Kopf adapters for the Foundry backend: FineTuneJobs and ModelDeployments on Azure AI Foundry.

A FineTuneJob with `backend: foundry` gets a poll (pollers.py) that walks it through
preflight (workspace reachable, region able to fine-tune the model, credentials
allowed), data (read, validated, split, staged), submission and polling. Its Azure
job name is a function of its uid and is written to status before the first Azure
call, and submission adopts a job of that name that carries our owner tag: a
restart, a lost response or a second replica never makes a second Azure job. Polls
back off while nothing changes and are woken at once by a spec change (a generation
newer than the poll last read: its own status writes come back as events too);
deleting the job, or `suspend: true` once submitted, cancels it on Azure (a
cancelled Azure job cannot be resumed, so it ends Cancelled). On success the Azure
model becomes a FineTunedModel.

A ModelDeployment with `backend: foundry` gets a poll that creates the serverless
endpoint once its model is Ready, keeps its key in a Secret the deployment owns, and
reports an endpoint Azure removed; deleting it deletes the endpoint first.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf

from kubetune import events
from kubetune.api.common import GROUP, VERSION, ConditionStatus
from kubetune.api.finetunedmodel import FineTunedModelSpec, FineTunedModelStatus, ModelSource
from kubetune.api.finetunejob import (
    FineTuneJobPhase,
    FineTuneJobSpec,
    FineTuneJobStatus,
    FoundryJobStatus,
)
from kubetune.api.kinds import FINETUNEDMODEL, FINETUNEJOB, MODELDEPLOYMENT
from kubetune.api.modeldeployment import (
    ModelDeploymentPhase,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
)
from kubetune.backends.foundry import (
    TERMINAL as AZURE_TERMINAL,
)
from kubetune.backends.foundry import (
    AzureAuthFailed,
    AzureNotFound,
    EndpointKeys,
    FineTuningRequest,
    JobInfo,
    ModelInUse,
    RegionNotSupported,
    azure_job_name,
    check_region,
    endpoint_name,
    model_version_of,
    registry_model,
    serverless_model_id,
)
from kubetune.backends.foundry.datasets import (
    StagedData,
    describe,
    read_source,
    stage,
)
from kubetune.backends.local.manifests import MANAGED_BY, finetuned_model_manifest
from kubetune.conditions import find_condition, set_condition
from kubetune.errors import BackendRejected, BackendUnavailable, InvalidSpec, NotReady
from kubetune.handlers.acceptance import post_transition
from kubetune.handlers.errors import RETRY_BACKOFF, kopf_errors
from kubetune.handlers.finetunejob import fail, observe, register_model
from kubetune.handlers.pollers import Pollers
from kubetune.k8s import Obj, path
from kubetune.metrics import observe_reconcile
from kubetune.reconcile.finetunedmodel import AZURE_BLOCKED, BLOCKED, blocked_status
from kubetune.reconcile.finetunejob import TERMINAL, Observed
from kubetune.reconcile.foundry import (
    endpoint_status,
    foundry_hyperparameters,
    observe_azure_job,
    polling_done,
)
from kubetune.reconcile.modeldeployment import with_phase
from kubetune.settings import FoundrySettings

log = logging.getLogger(__name__)

FTJ = (GROUP, VERSION, FINETUNEJOB.plural)
FTM = (GROUP, VERSION, FINETUNEDMODEL.plural)
MDEP = (GROUP, VERSION, MODELDEPLOYMENT.plural)
WORKSPACE_READY = "WorkspaceReady"
DATA_READY = "DataReady"
AUTH_RETRY = 60.0  # seconds (at most): a role assignment takes minutes to apply anyway
DELETE_POLL = 5.0

# A step returns None when the resource needs no more polling, else (changed, cap):
# whether anything changed (polls back off while nothing does) and the longest wait.
Step = tuple[bool, float] | None


@dataclasses.dataclass
class Nudge:
    """Wakes an object's poll before its wait is over (`wake`)."""

    event: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    generation: int = 0
    """The object's metadata.generation as its poll's last step read it."""


def is_foundry(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("backend") == "foundry")


def key_secret_name(deployment: str) -> str:
    return f"{deployment}-endpoint-key"


async def poll(
    memo: kopf.Memo,
    key: tuple[str, str, str],
    step: Callable[[], Awaitable[Step]],
    settings: FoundrySettings,
) -> None:
    """Run `step` until it says done: at once after a change, then backing off; Azure's
    Retry-After and NotReady delays are honoured; a nudge (`wake`) ends a wait early.
    Runs as one of the operator's pollers (pollers.py): only while this replica acts,
    and cancelled to stop."""
    nudge: Nudge = memo.nudges.setdefault(key, Nudge())
    delay = settings.poll_interval
    try:
        while True:
            nudge.event.clear()
            await memo.pollers.peering.wait_turn(key[1])
            try:
                with observe_reconcile(key[0], "foundry-poll"):
                    outcome = await step()
            except (BackendUnavailable, NotReady) as e:
                log.info("%s/%s: %s (again in %.0f s)", key[1], key[2], e, e.retry_after)
                wait = e.retry_after
            else:
                if outcome is None:
                    return
                changed, cap = outcome
                delay = settings.poll_interval if changed else min(delay * 2, cap)
                wait = delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(nudge.event.wait(), wait)
    finally:
        memo.nudges.pop(key, None)


def wake(memo: kopf.Memo, key: tuple[str, str, str], generation: int | None = None) -> None:
    """Poll the object again now, if it is polled: for any event (a model's, for its
    deployments), or for a spec newer than the one the poll last read (`generation`).
    The poll's own status writes come back as events of the generation it read, and
    must not cut short a wait that Azure asked for (Retry-After)."""
    nudge: Nudge | None = memo.nudges.get(key)
    if nudge is not None and (generation is None or generation > nudge.generation):
        nudge.event.set()


def read_generation(memo: kopf.Memo, key: tuple[str, str, str], obj: Obj) -> None:
    """Record the generation of the object that the poll's step is acting on."""
    nudge: Nudge | None = memo.nudges.get(key)
    if nudge is not None:
        nudge.generation = int(obj["metadata"].get("generation", 1))


def keep_polling(
    memo: kopf.Memo,
    key: tuple[str, str, str],
    event: kopf.RawEvent,
    meta: kopf.Meta,
    step: Callable[[], Awaitable[Step]],
    settings: FoundrySettings,
    *,
    wanted: bool = True,
) -> None:
    """From an object's event: poll Azure with `step` (one poller per object) while
    `wanted`, and stop once the object is being deleted."""
    pollers: Pollers = memo.pollers
    if event["type"] == "DELETED" or meta.get("deletionTimestamp"):
        pollers.drop(key)
    elif wanted:
        pollers.want(key, lambda: poll(memo, key, step, settings))


async def set_job_condition(
    memo: kopf.Memo, namespace: str, name: str, type_: str, ok: bool, reason: str, message: str
) -> None:
    """Set a preflight condition; a new failure also becomes a Warning event."""

    def fold(obj: Obj, old: FineTuneJobStatus) -> FineTuneJobStatus:
        conditions = set_condition(
            old.conditions,
            type_,
            ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
            reason,
            message,
            generation=int(obj["metadata"].get("generation", 1)),
            now=datetime.now(UTC),
        )
        return old.model_copy(update={"conditions": conditions})

    change = await memo.status.update(FINETUNEJOB.plural, namespace, name, FineTuneJobStatus, fold)
    if change is None or ok:
        return
    before = find_condition(change.old.conditions, type_)
    if before is None or before.status != ConditionStatus.FALSE or before.reason != reason:
        events.warn(change.obj, reason=reason, message=message)


def register(registry: kopf.OperatorRegistry, settings: FoundrySettings) -> None:
    def with_workspace(spec: FineTuneJobSpec) -> FineTuneJobSpec:
        """The spec with the operator's default workspace where it names none."""
        if spec.workspace is not None or settings.workspace is None:
            return spec
        return spec.model_copy(update={"workspace": settings.workspace})

    # --- FineTuneJob ---------------------------------------------------------------------
    @kopf.on.event(*FTJ, id="foundry_job", when=is_foundry, registry=registry)
    async def foundry_job(
        event: kopf.RawEvent,
        name: str,
        namespace: str,
        uid: str,
        meta: kopf.Meta,
        status: kopf.Status,
        memo: kopf.Memo,
        **_: Any,
    ) -> None:
        """Poll Azure for the job until it is finished and its model registered; a spec
        change (suspend) is acted on at once."""
        key = (FINETUNEJOB.kind, namespace, name)
        wake(memo, key, int(meta.get("generation", 1)))
        keep_polling(
            memo,
            key,
            event,
            meta,
            lambda: step_job(memo, namespace, name, uid),
            settings,
            wanted=not polling_done(FineTuneJobStatus.model_validate(status)),
        )

    async def step_job(memo: kopf.Memo, namespace: str, name: str, uid: str) -> Step:
        obj = await memo.kube.get_custom(FINETUNEJOB.plural, namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return None
        read_generation(memo, (FINETUNEJOB.kind, namespace, name), obj)
        status = FineTuneJobStatus.model_validate(obj.get("status") or {})
        if status.phase is None:
            raise NotReady("not accepted yet", retry_after=1)
        if polling_done(status):
            return None
        spec = with_workspace(FineTuneJobSpec.model_validate(obj["spec"]))
        if spec.workspace is None:
            await fail(
                memo,
                namespace,
                name,
                "InvalidSpec",
                "no Azure workspace: set spec.workspace, or the operator's default "
                "(the Helm chart's foundry.workspace)",
            )
            return None
        azure = status.foundry or FoundryJobStatus()
        if azure.job_name is None:
            # Recorded before any Azure call: every later attempt asks about this name.
            azure = FoundryJobStatus(job_name=azure_job_name(uid))
            await observe(
                memo,
                namespace,
                name,
                Observed(FineTuneJobPhase.VALIDATING, "Preflight", "Checking the Azure workspace"),
                foundry=azure,
            )
        assert azure.job_name is not None
        if azure.status is None:
            if spec.suspend:
                changed, _ = await observe(
                    memo,
                    namespace,
                    name,
                    Observed(
                        FineTuneJobPhase.SUSPENDED,
                        "Suspended",
                        "spec.suspend is true: nothing has been sent to Azure",
                    ),
                )
                return changed, settings.max_poll_interval
            info = await submit(memo, obj, spec, uid, azure.job_name)
            if info is None:
                return None
        else:
            try:
                info = await poll_job(memo, obj, spec, azure)
            except AzureAuthFailed as e:  # e.g. the role was revoked while the job ran
                await set_job_condition(
                    memo, namespace, name, WORKSPACE_READY, False, "AzureAuthFailed", str(e)
                )
                raise NotReady(
                    str(e), retry_after=min(AUTH_RETRY, settings.max_poll_interval)
                ) from e
            except (InvalidSpec, BackendRejected) as e:  # e.g. the job vanished on Azure
                await fail(memo, namespace, name, "AzureRejected", str(e))
                return None
        return await follow(memo, obj, spec, azure, info)

    async def poll_job(
        memo: kopf.Memo, obj: Obj, spec: FineTuneJobSpec, azure: FoundryJobStatus
    ) -> JobInfo:
        """The submitted job's state, cancelling it first when suspended."""
        assert spec.workspace is not None
        assert azure.job_name is not None
        job_name = azure.job_name
        client = await memo.foundry.client(obj["metadata"]["namespace"], spec.workspace)
        if spec.suspend and azure.status not in AZURE_TERMINAL | {"CancelRequested"}:
            await memo.foundry.call(client.cancel_job, job_name)
            events.info(
                obj,
                reason="Cancelling",
                message=f"spec.suspend is true: cancelling Azure job {job_name} "
                "(Azure jobs cannot be paused)",
            )
        info: JobInfo = await memo.foundry.call(client.get_job, job_name)
        return info

    async def submit(
        memo: kopf.Memo, obj: Obj, spec: FineTuneJobSpec, uid: str, job_name: str
    ) -> JobInfo | None:
        """Preflight, data and submission; None when the job failed on the way."""
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        assert spec.workspace is not None
        try:
            client = await memo.foundry.client(namespace, spec.workspace)
            ws = await memo.foundry.call(client.get_workspace)
            check_region(spec.base_model, ws.location)
        except AzureAuthFailed as e:
            await set_job_condition(
                memo, namespace, name, WORKSPACE_READY, False, "AzureAuthFailed", str(e)
            )
            raise NotReady(str(e), retry_after=min(AUTH_RETRY, settings.max_poll_interval)) from e
        except AzureNotFound as e:
            message = f"Workspace {spec.workspace.name} not found: {e}"
            await set_job_condition(
                memo, namespace, name, WORKSPACE_READY, False, "WorkspaceNotFound", message
            )
            raise NotReady(message, retry_after=min(AUTH_RETRY, settings.max_poll_interval)) from e
        except NotReady as e:
            await set_job_condition(
                memo, namespace, name, WORKSPACE_READY, False, "CredentialsNotFound", str(e)
            )
            raise
        except RegionNotSupported as e:
            await set_job_condition(
                memo, namespace, name, WORKSPACE_READY, False, "RegionNotSupported", str(e)
            )
            await fail(memo, namespace, name, "RegionNotSupported", str(e))
            return None
        except InvalidSpec as e:
            await fail(memo, namespace, name, "InvalidSpec", str(e))
            return None
        await set_job_condition(
            memo,
            namespace,
            name,
            WORKSPACE_READY,
            True,
            "WorkspaceReachable",
            f"Workspace {ws.name} in {ws.location} is reachable and can fine-tune "
            f"{(registry_model(spec.base_model) or ('', spec.base_model))[1]}",
        )
        try:
            staged = await stage_data(memo, namespace, spec, uid)
        except AzureAuthFailed as e:  # reading an Azure blob with the workspace identity
            await set_job_condition(
                memo, namespace, name, DATA_READY, False, "AzureAuthFailed", str(e)
            )
            raise NotReady(str(e), retry_after=min(AUTH_RETRY, settings.max_poll_interval)) from e
        except (InvalidSpec, BackendRejected) as e:  # bad data, a missing blob or Secret key
            await set_job_condition(
                memo, namespace, name, DATA_READY, False, "InvalidInput", str(e)
            )
            await fail(memo, namespace, name, "InvalidInput", str(e))
            return None
        except NotReady as e:
            await set_job_condition(
                memo, namespace, name, DATA_READY, False, "DataNotFound", str(e)
            )
            raise
        await set_job_condition(
            memo,
            namespace,
            name,
            DATA_READY,
            True,
            "Validated",
            f"{staged.examples[0]} training and {staged.examples[1]} validation examples",
        )
        request = FineTuningRequest(
            name=job_name,
            owner=uid,
            model_id=spec.base_model,
            training_file=staged.training,
            validation_file=staged.validation,
            output_model_prefix=spec.model or name,
            hyperparameters=foundry_hyperparameters(spec.hyperparameters),
        )
        try:
            info: JobInfo = await memo.foundry.call(client.submit_finetuning_job, request)
        except AzureAuthFailed as e:
            await set_job_condition(
                memo, namespace, name, WORKSPACE_READY, False, "AzureAuthFailed", str(e)
            )
            raise NotReady(str(e), retry_after=min(AUTH_RETRY, settings.max_poll_interval)) from e
        except BackendRejected as e:
            reason = type(e).__name__ if type(e) is not BackendRejected else "AzureRejected"
            await fail(memo, namespace, name, reason, str(e))
            return None
        verb = "Adopted the existing" if info.adopted else "Submitted"
        events.info(obj, reason="Submitted", message=f"{verb} Azure job {info.name}")
        return info

    async def stage_data(
        memo: kopf.Memo, namespace: str, spec: FineTuneJobSpec, uid: str
    ) -> StagedData:
        assert spec.workspace is not None
        workspace = spec.workspace

        async def blob(source: Any, sas: str | None) -> bytes:
            data: bytes = await memo.foundry.read_blob(namespace, workspace, source, sas)
            return data

        dataset = spec.dataset
        names = ["spec.dataset.training", "spec.dataset.validation"]
        data: list[bytes | None] = []
        for field, source in zip(names, (dataset.training, dataset.validation), strict=True):
            if source is None:
                data.append(None)
                continue
            data.append(
                await read_source(
                    memo.kube,
                    namespace,
                    source,
                    field=field,
                    read_secret=memo.foundry.secret_value,
                    read_blob=blob,
                )
            )
        training = data[0]
        assert training is not None
        labels = (
            f"{names[0]} ({describe(dataset.training)})",
            f"{names[1]} ({describe(dataset.validation)})" if dataset.validation else names[1],
        )
        return stage(
            training,
            data[1],
            names=labels,
            split=dataset.validation_split,
            seed=spec.hyperparameters.seed,
            directory=Path(settings.staging_dir) / uid,
        )

    async def follow(
        memo: kopf.Memo, obj: Obj, spec: FineTuneJobSpec, azure: FoundryJobStatus, info: JobInfo
    ) -> Step:
        """Record what Azure says; on success register the model."""
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        old = FineTuneJobStatus.model_validate(obj.get("status") or {})
        mirrored = azure.model_copy(
            update={"status": info.status, "portal_url": info.portal_url or azure.portal_url}
        )
        model_id = None
        if info.status == "Completed" and info.model_name and info.model_version:
            assert spec.workspace is not None
            client = await memo.foundry.client(namespace, spec.workspace)
            ws = await memo.foundry.call(client.get_workspace)
            model_id = serverless_model_id(ws, info.model_name, info.model_version)
            mirrored = mirrored.model_copy(update={"model_id": model_id})
        changed, new = await observe(
            memo, namespace, name, observe_azure_job(info, old), foundry=mirrored
        )
        if new is None:
            return None
        if new.phase is FineTuneJobPhase.SUCCEEDED and new.model is None:
            if model_id is None:
                events.warn(
                    obj,
                    reason="NoModel",
                    message=f"Azure job {info.name} completed without a registered model",
                )
                return None
            model = FineTunedModelSpec(
                base_model=spec.base_model,
                source=ModelSource(azure_model_id=model_id),
                source_job=name,
                workspace=spec.workspace,
            )
            manifest = finetuned_model_manifest(
                name=spec.model or name, namespace=namespace, job_name=name, spec=model
            )
            registered = await register_model(memo, obj, manifest)
            if registered is not None:
                message = f"Registered FineTunedModel {registered}"
                events.info(obj, reason="ModelCreated", message=message)
        return None if new.phase in TERMINAL else (changed, settings.max_poll_interval)

    @kopf.on.delete(
        *FTJ, id="foundry_cancel", when=is_foundry, backoff=RETRY_BACKOFF, registry=registry
    )
    async def foundry_cancel(
        name: str, namespace: str, spec: kopf.Spec, status: kopf.Status, memo: kopf.Memo, **_: Any
    ) -> None:
        """Deleting a job cancels it on Azure (a job that is not there is done)."""
        azure = FoundryJobStatus.model_validate(status.get("foundry") or {})
        if azure.job_name is None or azure.status in AZURE_TERMINAL:
            return
        parsed = with_workspace(FineTuneJobSpec.model_validate(dict(spec)))
        if parsed.workspace is None:
            return  # nothing was ever submitted
        with observe_reconcile(FINETUNEJOB.kind, "foundry-cancel"), kopf_errors():
            try:
                client = await memo.foundry.client(namespace, parsed.workspace)
                await memo.foundry.call(client.cancel_job, azure.job_name)
            except (AzureAuthFailed, InvalidSpec) as e:
                log.warning(
                    "%s/%s: cannot cancel Azure job %s: %s", namespace, name, azure.job_name, e
                )
                return
        log.info("%s/%s: cancelled Azure job %s", namespace, name, azure.job_name)

    # --- ModelDeployment -------------------------------------------------------------------
    @kopf.on.event(*MDEP, id="foundry_endpoint", when=is_foundry, registry=registry)
    async def foundry_endpoint(
        event: kopf.RawEvent, name: str, namespace: str, meta: kopf.Meta, memo: kopf.Memo, **_: Any
    ) -> None:
        """Poll Azure for the endpoint while the deployment exists."""
        keep_polling(
            memo,
            (MODELDEPLOYMENT.kind, namespace, name),
            event,
            meta,
            lambda: step_endpoint(memo, namespace, name),
            settings,
        )

    @kopf.on.event(*FTM, id="foundry_model_changed", registry=registry)
    async def foundry_model_changed(
        name: str,
        namespace: str,
        memo: kopf.Memo,
        deployments_by_model: kopf.Index[Any, str],
        **_: Any,
    ) -> None:
        for deployment in deployments_by_model.get((namespace, name), []):
            wake(memo, (MODELDEPLOYMENT.kind, namespace, deployment))

    async def step_endpoint(memo: kopf.Memo, namespace: str, name: str) -> Step:
        obj = await memo.kube.get_custom(MODELDEPLOYMENT.plural, namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return None
        status = ModelDeploymentStatus.model_validate(obj.get("status") or {})
        if status.phase is None:
            raise NotReady("not accepted yet", retry_after=1)
        spec = ModelDeploymentSpec.model_validate(obj["spec"])
        model_name = spec.model_ref.name
        target = (spec.foundry.endpoint_name if spec.foundry else None) or endpoint_name(
            namespace, name
        )
        model = await memo.kube.get_custom(FINETUNEDMODEL.plural, namespace, model_name)
        endpoint, key_secret = None, None
        previous = status.foundry.provisioning_state if status.foundry else None
        model_spec = FineTunedModelSpec.model_validate(model["spec"]) if model else None
        ready_model = (model or {}).get("status", {}).get("phase") in ("Ready", "InUse")
        if model_spec is not None and ready_model:
            if model_spec.source.azure_model_id is None or model_spec.workspace is None:
                await not_servable(
                    memo,
                    obj,
                    f"FineTunedModel {model_name} is not an Azure model: backend foundry "
                    "serves models registered on Azure (use backend local for adapters)",
                )
                return None
            client = await memo.foundry.client(namespace, model_spec.workspace)
            endpoint = await memo.foundry.call(client.get_endpoint, target)
            if endpoint is None and previous not in ("Succeeded", "Missing"):
                ws = await memo.foundry.call(client.get_workspace)
                base = model_spec.base_model if registry_model(model_spec.base_model) else None
                endpoint = await memo.foundry.call(
                    lambda: client.create_endpoint(
                        target,
                        model_spec.source.azure_model_id or "",
                        location=ws.location,
                        base_model_id=base,
                    )
                )
                events.info(obj, reason="EndpointCreated", message=f"Creating endpoint {target}")
            if endpoint is not None and endpoint.provisioning_state == "Succeeded":
                keys = await memo.foundry.call(client.get_endpoint_keys, target)
                key_secret = await write_key_secret(memo, obj, keys)

        def fold(current: Obj, old: ModelDeploymentStatus) -> ModelDeploymentStatus:
            return endpoint_status(
                old,
                model=model,
                model_name=model_name,
                endpoint_name=target,
                endpoint=endpoint,
                key_secret=key_secret,
                generation=int(current["metadata"].get("generation", 1)),
                now=datetime.now(UTC),
            )

        change = await memo.status.update(
            MODELDEPLOYMENT.plural, namespace, name, ModelDeploymentStatus, fold
        )
        if change is None:
            return None
        post_transition(change)
        ready = change.new.phase is not None and change.new.phase.value == "Ready"
        cap = settings.endpoint_check_interval if ready else settings.max_poll_interval
        return change.old != change.new, cap

    async def not_servable(memo: kopf.Memo, obj: Obj, message: str) -> None:
        def fold(current: Obj, old: ModelDeploymentStatus) -> ModelDeploymentStatus:
            return with_phase(
                old,
                ModelDeploymentPhase.FAILED,
                "Available",
                False,
                "NotAnAzureModel",
                message,
                generation=int(current["metadata"].get("generation", 1)),
                now=datetime.now(UTC),
            )

        meta = obj["metadata"]
        change = await memo.status.update(
            MODELDEPLOYMENT.plural, meta["namespace"], meta["name"], ModelDeploymentStatus, fold
        )
        if change is not None:
            post_transition(change, "NotAnAzureModel", message)

    async def write_key_secret(memo: kopf.Memo, obj: Obj, keys: EndpointKeys) -> str:
        """The endpoint's keys in a Secret owned by the deployment (re-written if rotated)."""
        meta = obj["metadata"]
        name = key_secret_name(meta["name"])
        data = {
            "primary-key": base64.b64encode(keys.primary.encode()).decode(),
            "secondary-key": base64.b64encode(keys.secondary.encode()).decode(),
        }
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": dict(MANAGED_BY),
                "ownerReferences": [
                    {
                        "apiVersion": obj["apiVersion"],
                        "kind": obj["kind"],
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "data": data,
        }
        secret, created = await memo.kube.create(path("v1", "secrets", meta["namespace"]), body)
        if not created and secret.get("data") != data:
            await memo.kube.patch(path("v1", "secrets", meta["namespace"], name), {"data": data})
        return name

    @kopf.on.delete(
        *MDEP,
        id="foundry_endpoint_delete",
        when=is_foundry,
        backoff=RETRY_BACKOFF,
        registry=registry,
    )
    async def foundry_endpoint_delete(
        name: str, namespace: str, spec: kopf.Spec, body: kopf.Body, memo: kopf.Memo, **_: Any
    ) -> None:
        """Delete the endpoint on Azure before the deployment goes (404 counts as done)."""
        parsed = ModelDeploymentSpec.model_validate(dict(spec))
        target = (parsed.foundry.endpoint_name if parsed.foundry else None) or endpoint_name(
            namespace, name
        )
        model = await memo.kube.get_custom(FINETUNEDMODEL.plural, namespace, parsed.model_ref.name)
        workspace = FineTunedModelSpec.model_validate(model["spec"]).workspace if model else None
        if workspace is None:
            log.info("%s/%s: no Azure model, so no endpoint to delete", namespace, name)
            return
        with observe_reconcile(MODELDEPLOYMENT.kind, "foundry-delete"), kopf_errors():
            client = await memo.foundry.client(namespace, workspace)
            gone = await memo.foundry.call(client.delete_endpoint, target)
        if not gone:
            raise kopf.TemporaryError(f"Azure is deleting endpoint {target}", delay=DELETE_POLL)
        events.info(
            body,
            reason="EndpointDeleted",
            message=f"Deleted serverless endpoint {target}",
        )


async def delete_azure_model(memo: kopf.Memo, obj: Obj) -> None:
    """Delete the Azure model version of a FineTunedModel (404 counts as done).

    Azure's refusal because a serverless endpoint still serves it puts the model in
    DeletionBlocked, as a ModelDeployment would, and raises ModelInUse for a retry.
    """
    meta = obj["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    spec = FineTunedModelSpec.model_validate(obj["spec"])
    found = model_version_of(spec.source.azure_model_id or "")
    if found is None or spec.workspace is None:
        return
    client = await memo.foundry.client(namespace, spec.workspace)
    try:
        await memo.foundry.call(client.delete_model_version, *found)
    except ModelInUse as e:
        message = (
            f"Azure refuses to delete model {found[0]}:{found[1]}: a serverless endpoint "
            f"still serves it; delete the deployments first (retrying in {e.retry_after:.0f} s)"
        )

        def fold(_: Obj, old: FineTunedModelStatus) -> FineTunedModelStatus:
            return blocked_status(old, AZURE_BLOCKED, message, now=datetime.now(UTC))

        change = await memo.status.update(
            FINETUNEDMODEL.plural, namespace, name, FineTunedModelStatus, fold
        )
        if change is not None:
            post_transition(change, BLOCKED, message)
        raise
    events.info(
        obj, reason="AzureModelDeleted", message=f"Deleted Azure model {found[0]}:{found[1]}"
    )
