"""Builds the Kopf registry for every kind and runs the operator."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from kubetune import events
from kubetune.api.common import GROUP
from kubetune.backends.foundry.connections import Connections
from kubetune.configmapkeys import ConfigMapKeys
from kubetune.handlers import finetunedmodel, finetunejob, foundry, modeldeployment
from kubetune.handlers.bookkeeping import ObservedGeneration, ProgressAnnotations
from kubetune.handlers.children import Children
from kubetune.handlers.pollers import Peering, Pollers
from kubetune.handlers.status import StatusWriter
from kubetune.httpserver import start_server
from kubetune.k8s import PAGE, Kube, login, path
from kubetune.reports import ReportSink
from kubetune.settings import LogFormat, RunOptions

log = logging.getLogger(__name__)

# The ids of the create/update/resume handlers of every kind (see bookkeeping.py).
CHANGE_HANDLERS = ("reconcile",)


class SharedMemo(kopf.Memo):
    """The operator's state (a client, caches, queues), the same for every object. Kopf
    gives each object it sees its own shallow copy of the memo and keeps it while the
    object exists: with this state in 16 keys, 0.5 KB per object, 5 MB at 10,000 (jobs
    and their models), all copies of the same references. No handler keeps anything of
    one object's in the memo, so one memo serves them all."""

    def __copy__(self) -> SharedMemo:
        return self


async def ensure_peering(kube: Kube, name: str, namespaces: tuple[str, ...]) -> None:
    """Create the Kopf peering object(s) replicas meet in; Kopf only updates existing ones,
    and replicas that cannot see each other would all act."""
    body = {"apiVersion": "kopf.dev/v1", "metadata": {"name": name}}
    if not namespaces:
        await kube.create(
            path("kopf.dev/v1", "clusterkopfpeerings"), {**body, "kind": "ClusterKopfPeering"}
        )
    for namespace in namespaces:
        await kube.create(
            path("kopf.dev/v1", "kopfpeerings", namespace), {**body, "kind": "KopfPeering"}
        )


def build_registry(options: RunOptions) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    # The same credentials for Kopf's watches as for our own client.
    kopf.on.login(registry=registry, id="login")(login)

    @kopf.on.startup(registry=registry, id="startup")
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        # Kopf's state lives in annotations under our own prefix, never in
        # status: status belongs to the CRD schema, which would prune it.
        settings.persistence.finalizer = f"{GROUP}/finalizer"
        progress = ProgressAnnotations(prefix=GROUP)
        settings.persistence.progress_storage = progress
        # "Handled" is status.observedGeneration, which the handlers write anyway.
        settings.persistence.diffbase_storage = ObservedGeneration(progress, CHANGE_HANDLERS)
        settings.posting.level = logging.INFO
        # Objects handled at once (per kind): a burst of thousands of new jobs otherwise
        # holds thousands of handler tasks and their bodies at the same time, and the
        # memory stays fragmented after it (docs/performance.md). Each handler waits on
        # the API server most of the time: 50 took 30 jobs/s where 20 took 26.
        settings.queueing.worker_limit = options.workers
        # A worker that handled an object's events frees its place at once: with Kopf's
        # default (waiting 5 s for more events) the bounded workers capped the operator
        # at workers/5 objects per second, and a restart's re-list with them.
        settings.queueing.idle_timeout = 0.05
        # Kopf's own lists (a start, a restart's re-list) in pages, as our informers'.
        settings.watching.chunk_size = PAGE
        if options.peering:
            # Refuse to run unpeered by mistake, and let a standby take over quickly.
            settings.peering.mandatory = True
            settings.peering.lifetime = options.peering_lifetime
        memo.kube = await Kube.connect()
        events.start(memo.kube)
        memo.namespaces = options.namespaces
        memo.workers = options.workers
        if options.peering:
            await ensure_peering(memo.kube, options.peering, options.namespaces)
        memo.status = StatusWriter(memo.kube)
        memo.children = await Children.load(memo.kube, options.namespaces)
        memo.dataset_keys = ConfigMapKeys(memo.kube)
        memo.phases = {}
        memo.foundry = Connections(memo.kube)
        memo.foundry_settings = options.foundry
        memo.nudges = {}
        memo.pollers = Pollers(
            Peering(memo.kube, options.peering, options.priority, not options.namespaces)
        )
        memo.rechecks = {}
        memo.background = set()
        memo.http = await start_server(options.http_host, options.http_port, ReportSink(memo.kube))
        log.info("Serving /healthz and /metrics on %s:%d", options.http_host, options.http_port)

    finetunejob.register(registry, options.local)
    finetunedmodel.register(registry, options.local)
    modeldeployment.register(registry, options.local)
    foundry.register(registry, options.foundry)

    # Kopf runs cleanup handlers in the order they were registered: this one, which
    # closes the client, after those of the kinds.
    @kopf.on.cleanup(registry=registry, id="cleanup")
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        for handle in memo.rechecks.values():
            handle.cancel()
        await memo.pollers.close()
        await memo.http.cleanup()
        await events.stop()
        await memo.kube.close()

    return registry


# Loggers that would print every Azure request (urllib3: whole URLs, SAS tokens included).
QUIET_LOGGERS = ("azure", "urllib3", "msal")


# Kopf's line per handler call ("Handler 'reconcile' succeeded."), unless --verbose:
# our own lines say what changed, and at scale these cost 5% of the operator's CPU
# (docs/performance.md). Kopf's warnings and errors still show.
ROUTINE_LOGGERS = ("kopf.objects",)


def run(options: RunOptions) -> None:
    kopf.configure(
        verbose=options.verbose,
        log_format=kopf.LogFormat.JSON
        if options.log_format is LogFormat.JSON
        else kopf.LogFormat.FULL,
    )
    for name in QUIET_LOGGERS + (() if options.verbose else ROUTINE_LOGGERS):
        logging.getLogger(name).setLevel(logging.WARNING)
    asyncio.run(
        kopf.operator(
            registry=build_registry(options),
            memo=SharedMemo(),
            standalone=options.peering is None,
            peering_name=options.peering,
            priority=options.priority,
            clusterwide=not options.namespaces,
            namespaces=list(options.namespaces),
        )
    )
