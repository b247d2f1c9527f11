"""The operator's Azure connections: one client per workspace and credentials, and one way
to call it (in a worker thread: the SDK blocks, Kopf's loop must not).

Credentials are the operator's Azure Workload Identity unless the workspace names a
Secret with a service principal (read in the resource's namespace; its values stay in
memory, never in status, events or logs). A client is re-made when that Secret changes.
azure-ai-ml takes seconds to import, so it is imported on the first Foundry resource,
not when the operator starts.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from kubetune.api.common import AzureBlobSource, FoundryWorkspace
from kubetune.backends.foundry import ServicePrincipal, WorkspaceRef
from kubetune.errors import InvalidSpec, NotReady
from kubetune.k8s import Kube, Obj, path

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from kubetune.backends.foundry.client import FoundryClient

T = TypeVar("T")
SP_KEYS = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET")


def workspace_ref(ws: FoundryWorkspace) -> WorkspaceRef:
    return WorkspaceRef(ws.subscription_id, ws.resource_group, ws.name)


class Connections:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._clients: dict[tuple[object, ...], FoundryClient] = {}
        self._credentials: dict[tuple[object, ...], TokenCredential] = {}
        self._lock = asyncio.Lock()

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run one blocking SDK call in a worker thread."""
        return await asyncio.to_thread(fn, *args)

    async def _secret(self, namespace: str, name: str, field: str) -> Obj:
        secret = await self.kube.get(path("v1", "secrets", namespace, name))
        if secret is None:
            raise NotReady(f"Secret {name} ({field}) not found", retry_after=15)
        return secret

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        data = (await self._secret(namespace, name, "a SAS token")).get("data") or {}
        if key not in data:
            raise InvalidSpec(f"Secret {name} has no key {key}")
        return base64.b64decode(data[key]).decode()

    async def _credential(
        self, namespace: str, ws: FoundryWorkspace
    ) -> tuple[tuple[object, ...], TokenCredential]:
        from kubetune.backends.foundry import client as sdk

        ref = ws.credentials.secret_ref if ws.credentials else None
        if ref is None:
            key: tuple[object, ...] = ("workload-identity",)
            sp = None
        else:
            field = "spec.workspace.credentials.secretRef"
            secret = await self._secret(namespace, ref.name, field)
            data = secret.get("data") or {}
            missing = [k for k in SP_KEYS if k not in data]
            if missing:
                raise InvalidSpec(f"Secret {ref.name} ({field}) lacks {', '.join(missing)}")
            key = ("secret", namespace, ref.name, secret["metadata"].get("resourceVersion"))
            sp = ServicePrincipal(*(base64.b64decode(data[k]).decode().strip() for k in SP_KEYS))
        if key not in self._credentials:
            self._credentials[key] = await self.call(sdk.build_credential, sp)
        return key, self._credentials[key]

    async def client(self, namespace: str, ws: FoundryWorkspace) -> FoundryClient:
        """The client for a workspace with the credentials it names (made once, then kept)."""
        from kubetune.backends.foundry import client as sdk

        async with self._lock:
            key, credential = await self._credential(namespace, ws)
            ref = workspace_ref(ws)
            if (ref, *key) not in self._clients:
                self._clients[(ref, *key)] = await self.call(sdk.connect, ref, credential)
            return self._clients[(ref, *key)]

    async def read_blob(
        self, namespace: str, ws: FoundryWorkspace, source: AzureBlobSource, sas: str | None
    ) -> bytes:
        """A blob, with its SAS token or else the workspace's credentials."""
        from kubetune.backends.foundry import client as sdk

        credential: str | TokenCredential
        credential = sas if sas is not None else (await self._credential(namespace, ws))[1]
        return await self.call(
            sdk.read_blob, source.account_url, source.container, source.blob, credential
        )
