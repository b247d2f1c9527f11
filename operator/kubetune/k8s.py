"""The only module that calls the Kubernetes API (Kopf's own watching aside).

A thin async REST layer over kubernetes-asyncio's authenticated ApiClient that
speaks plain dicts: objects come back as the API server sent them (no generated
model classes, no (de)serialisation cost), creates are idempotent (an existing
object of the same name is returned with `created=False`), and a missing object
is None. Reconcile logic never sees an ApiException other than real failures.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from kubetune.api.common import API_VERSION
from kubetune.errors import BackendRejected

Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
TRANSIENT = frozenset({429, 500, 502, 503, 504})
RETRIES = 6
BACKOFF = 0.2
BACKOFF_CAP = 5.0

log = logging.getLogger(__name__)


def _retry_after(e: ApiException) -> float | None:
    try:
        headers: Any = e.headers or {}
        return min(BACKOFF_CAP, float(headers.get("Retry-After", "")))
    except ValueError:
        return None


def _message(e: ApiException) -> str:
    try:
        return str(json.loads(e.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return str(e.reason)


def _ignore_environment(api: client.ApiClient) -> None:
    """Make the client stop looking up a proxy and ~/.netrc in the environment.

    kubernetes_asyncio hard-codes `trust_env=True` in its aiohttp session, so every
    request hands both lookups to executor threads (about 12% of the operator's main
    thread at 1,000 jobs; docs/performance.md). The endpoint and credentials come from
    the service account or kubeconfig, and a kubeconfig's proxy-url is still passed
    with each request; Kopf's own client does not trust the environment either. The
    session's connector (its TLS settings and pool) moves to a session that does not.
    """
    rest = api.rest_client
    old: aiohttp.ClientSession = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(
        # kubernetes_asyncio's buffer size: a watch event may be up to etcd's 1.5 MiB.
        connector=old.connector,
        trust_env=False,
        read_bufsize=2**21,
    )
    old.detach()  # closed, without closing the connector it handed over


class Conflict(Exception):
    """An object to create exists under that name but vanished before it could be read."""


def path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The REST path of a collection or object: `path("batch/v1", "jobs", "ns", "x")`."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [prefix]
    if namespace is not None:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural)
    parts.extend(p for p in (name, subresource) if p)
    return "/".join(parts)


class Kube:
    """API access for handlers; create one per operator with `connect()`."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    @classmethod
    async def connect(cls) -> Kube:
        """From the pod's service account in a cluster, else from the kubeconfig."""
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config()
        api = client.ApiClient()
        _ignore_environment(api)
        return cls(api)

    async def close(self) -> None:
        await self.api.close()

    async def request(
        self,
        method: str,
        url: str,
        body: Obj | None = None,
        *,
        content_type: str = "application/json",
    ) -> Obj:
        """One API call. Throttling (429), server errors (5xx) and dropped connections
        are retried with backoff, honouring Retry-After, as client-go does: every call
        here is safe to repeat (reads, merge patches, creates that treat 409 as done)."""
        for attempt in range(RETRIES + 1):
            try:
                return await self._request_once(method, url, body, content_type)
            except ApiException as e:
                if e.status not in TRANSIENT or attempt == RETRIES:
                    raise
                delay = _retry_after(e) or min(BACKOFF_CAP, BACKOFF * 2**attempt)
            except aiohttp.ClientConnectionError:
                if attempt == RETRIES:
                    raise
                delay = min(BACKOFF_CAP, BACKOFF * 2**attempt)
            log.info(
                "retry method=%s url=%s attempt=%d delay=%.1f", method, url, attempt + 1, delay
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _request_once(
        self, method: str, url: str, body: Obj | None, content_type: str
    ) -> Obj:
        response = await self.api.call_api(
            url,
            method,
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
        )
        try:
            raw = await response.read()
        finally:
            response.release()
        if response.status >= 400:
            error = ApiException(status=response.status, reason=response.reason)
            error.body = raw.decode(errors="replace")
            error.headers = response.headers
            raise error
        data: Obj = json.loads(raw)
        return data

    async def get(self, url: str) -> Obj | None:
        try:
            return await self.request("GET", url)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def list_items(self, url: str) -> list[Obj]:
        items: list[Obj] = (await self.request("GET", url))["items"]
        return items

    async def create(self, collection: str, body: Obj) -> tuple[Obj, bool]:
        """Create, or return the existing object of that name; the bool says which.
        An object the API server refuses as invalid raises BackendRejected with its reason."""
        try:
            return await self.request("POST", collection, body), True
        except ApiException as e:
            if e.status in (400, 422):
                raise BackendRejected(f"the API server refused {collection}: {_message(e)}") from e
            if e.status != 409:
                raise
        existing = await self.get(f"{collection}/{body['metadata']['name']}")
        if existing is None:
            raise Conflict(f"{collection}/{body['metadata']['name']} vanished while being created")
        return existing, False

    async def patch(self, url: str, patch: Obj) -> Obj | None:
        """A JSON merge patch; None when the object is gone. Put metadata.resourceVersion
        in the patch to make it conditional (409 when someone changed it first)."""
        try:
            return await self.request("PATCH", url, patch, content_type=MERGE_PATCH)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def set_finalizer(self, url: str, finalizer: str, *, present: bool) -> Obj | None:
        """Add or remove one finalizer, from a fresh read, retrying when someone else
        changed the object in between (409); None when the object is gone."""
        for _ in range(5):
            obj = await self.get(url)
            if obj is None:
                return None
            current = list(obj["metadata"].get("finalizers") or [])
            if (finalizer in current) == present:
                return obj
            wanted = [*current, finalizer] if present else [f for f in current if f != finalizer]
            meta = {"finalizers": wanted, "resourceVersion": obj["metadata"]["resourceVersion"]}
            try:
                return await self.patch(url, {"metadata": meta})
            except ApiException as e:
                if e.status != 409:
                    raise
        raise Conflict(f"{url} kept changing while its finalizers were updated")

    # Shorthands for what the handlers use most.

    async def get_custom(self, plural: str, namespace: str, name: str) -> Obj | None:
        return await self.get(path(API_VERSION, plural, namespace, name))

    async def list_custom(self, plural: str, namespace: str) -> list[Obj]:
        return await self.list_items(path(API_VERSION, plural, namespace))

    async def create_custom(self, plural: str, namespace: str, body: Obj) -> tuple[Obj, bool]:
        return await self.create(path(API_VERSION, plural, namespace), body)

    async def patch_custom(self, plural: str, namespace: str, name: str, patch: Obj) -> Obj | None:
        return await self.patch(path(API_VERSION, plural, namespace, name), patch)

    async def patch_custom_status(
        self, plural: str, namespace: str, name: str, status: Obj
    ) -> Obj | None:
        return await self.patch(
            path(API_VERSION, plural, namespace, name, "status"), {"status": status}
        )

    async def create_job(self, namespace: str, body: Obj) -> tuple[Obj, bool]:
        return await self.create(path("batch/v1", "jobs", namespace), body)

    async def patch_job(self, namespace: str, name: str, patch: Obj) -> Obj | None:
        return await self.patch(path("batch/v1", "jobs", namespace, name), patch)

    async def get_pod(self, namespace: str, name: str) -> Obj | None:
        return await self.get(path("v1", "pods", namespace, name))

    async def get_config_map(self, namespace: str, name: str) -> Obj | None:
        return await self.get(path("v1", "configmaps", namespace, name))

    async def get_namespace(self, name: str) -> Obj | None:
        return await self.get(path("v1", "namespaces", None, name))

    async def apply_deployment(self, namespace: str, body: Obj) -> Obj:
        """Create the Deployment, or bring an existing one's spec and annotations to `body`'s."""
        deployment, created = await self.create(path("apps/v1", "deployments", namespace), body)
        if created:
            return deployment
        patched = await self.patch(
            path("apps/v1", "deployments", namespace, body["metadata"]["name"]),
            {
                "metadata": {"annotations": body["metadata"].get("annotations")},
                "spec": body["spec"],
            },
        )
        return patched or deployment

    async def create_service(self, namespace: str, body: Obj) -> Obj:
        service, _ = await self.create(path("v1", "services", namespace), body)
        return service

    async def review_token(self, token: str, audience: str) -> Obj:
        """The API server's TokenReview of a bearer token for one audience."""
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]},
        }
        return await self.request("POST", path("authentication.k8s.io/v1", "tokenreviews"), review)
