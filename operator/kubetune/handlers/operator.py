"""Builds the Kopf registry for every kind and runs the operator."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from kubetune.api.common import GROUP
from kubetune.handlers import finetunedmodel, finetunejob, modeldeployment
from kubetune.handlers.status import StatusWriter
from kubetune.httpserver import start_server
from kubetune.k8s import Kube
from kubetune.reports import ReportSink
from kubetune.settings import LogFormat, RunOptions

log = logging.getLogger(__name__)


def build_registry(options: RunOptions) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In a pod: its service account; elsewhere: $KUBECONFIG or ~/.kube/config.
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(
            **kwargs
        ) or kopf.login_with_kubeconfig(**kwargs)
        return info

    @kopf.on.startup(registry=registry, id="startup")
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        # Kopf's state lives in annotations under our own prefix, never in
        # status: status belongs to the CRD schema, which would prune it.
        settings.persistence.finalizer = f"{GROUP}/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.posting.level = logging.INFO
        memo.kube = await Kube.connect()
        memo.status = StatusWriter(memo.kube)
        memo.phases = {}
        memo.http = await start_server(options.http_host, options.http_port, ReportSink(memo.kube))
        log.info("Serving /healthz and /metrics on %s:%d", options.http_host, options.http_port)

    @kopf.on.cleanup(registry=registry, id="cleanup")
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        await memo.http.cleanup()
        await memo.kube.close()

    finetunejob.register(registry, options.local)
    finetunedmodel.register(registry, options.local)
    modeldeployment.register(registry, options.local)
    return registry


def run(options: RunOptions) -> None:
    kopf.configure(
        verbose=options.verbose,
        log_format=kopf.LogFormat.JSON
        if options.log_format is LogFormat.JSON
        else kopf.LogFormat.FULL,
    )
    asyncio.run(
        kopf.operator(
            registry=build_registry(options),
            standalone=options.peering is None,
            peering_name=options.peering,
            clusterwide=not options.namespaces,
            namespaces=list(options.namespaces),
        )
    )
