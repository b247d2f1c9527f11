"""The only module that calls the Kubernetes API (Kopf's own watching aside).

A thin async REST client on aiohttp that speaks plain dicts: objects come back as
the API server sent them (no generated model classes, no (de)serialisation cost),
creates are idempotent (an existing object of the same name is returned with
`created=False`), and a missing object is None. It logs in the way Kopf does
(`login()`: the pod's service account, else the kubeconfig), so the operator's
requests and Kopf's watches use the same identity, and it carries no generated
client library: kubernetes-asyncio cost 60 MB of resident memory at import, a
third of the operator's footprint (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
import kopf

from kubetune.api.common import API_VERSION
from kubetune.errors import BackendRejected

Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
# The Accept header for an object's metadata alone.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
TRANSIENT = frozenset({429, 500, 502, 503, 504})
RETRIES = 6
BACKOFF = 0.2
BACKOFF_CAP = 5.0
# Longer than any single API call takes; a hung connection is retried like a dropped one.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60)
# A watch ends when the server closes it (its timeoutSeconds); a connection silent
# for longer than this is dead, and is watched again.
WATCH_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600)
# Connections to the API server at once. Each TLS connection costs about 300 KB
# (asyncio's 256 KiB read buffer and OpenSSL's state); with 20 the operator's workers
# (settings.workers) waited for connections and the throughput was 18 jobs/s against
# 26 with 60, and 28 with 100 (docs/performance.md).
POOL = 60
# Items per list response: memory holds one page of a collection at a time.
PAGE = 500

log = logging.getLogger(__name__)


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, body: str, headers: Mapping[str, str]) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.body = body
        self.headers = headers


def _api_error(response: aiohttp.ClientResponse, raw: bytes) -> ApiError:
    """An error answer (status >= 400) and its body."""
    return ApiError(
        response.status, response.reason or "", raw.decode(errors="replace"), response.headers
    )


def _retry_after(e: ApiError) -> float | None:
    try:
        return min(BACKOFF_CAP, float(e.headers.get("Retry-After", "")))
    except ValueError:
        return None


def _message(e: ApiError) -> str:
    try:
        return str(json.loads(e.body)["message"])
    except (TypeError, ValueError, KeyError):
        return e.reason


def login(settings: kopf.OperatorSettings | None = None, **_: Any) -> kopf.ConnectionInfo | None:
    """Credentials: in a pod, its service account; elsewhere $KUBECONFIG or
    ~/.kube/config. Kopf's login handler and our client both use this."""
    settings = settings or kopf.OperatorSettings()
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(
        settings=settings, logger=log
    ) or kopf.login_with_kubeconfig(settings=settings, logger=log)
    return info


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

    def __init__(self, info: kopf.ConnectionInfo) -> None:
        self.server = info.server.rstrip("/")
        self.proxy = info.proxy_url
        self.headers = info.as_http_headers()
        ssl = info.as_ssl_context()
        # No proxy or ~/.netrc lookups from the environment: the endpoint and the
        # credentials come from the login, as for Kopf's own client.
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=POOL, ssl=ssl),
            timeout=REQUEST_TIMEOUT,
            trust_env=False,
        )
        self.streams = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ssl=ssl),
            timeout=WATCH_TIMEOUT,
            trust_env=False,
        )

    @classmethod
    async def connect(cls) -> Kube:
        """From the pod's service account in a cluster, else from the kubeconfig."""
        info = login()
        if info is None:
            raise kopf.LoginError("no service account and no kubeconfig to connect with")
        return cls(info)

    async def close(self) -> None:
        await self.session.close()
        await self.streams.close()

    def relogin(self) -> bool:
        """Take the credentials again (a service account token is rotated on disk);
        whether they changed."""
        info = login()
        headers = info.as_http_headers() if info is not None else self.headers
        changed = headers != self.headers
        self.headers = headers
        return changed

    async def request(
        self,
        method: str,
        url: str,
        body: Obj | None = None,
        *,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> Obj:
        """One API call. Throttling (429), server errors (5xx) and dropped connections
        are retried with backoff, honouring Retry-After, as client-go does: every call
        here is safe to repeat (reads, merge patches, creates that treat 409 as done).
        A 401 is retried once with the credentials read again."""
        relogged = False
        for attempt in range(RETRIES + 1):
            try:
                return await self._request_once(method, url, body, content_type, accept)
            except ApiError as e:
                if e.status == 401 and not relogged:
                    relogged = True
                    if self.relogin():
                        continue
                if e.status not in TRANSIENT or attempt == RETRIES:
                    raise
                delay = _retry_after(e) or min(BACKOFF_CAP, BACKOFF * 2**attempt)
            except (aiohttp.ClientConnectionError, TimeoutError):
                if attempt == RETRIES:
                    raise
                delay = min(BACKOFF_CAP, BACKOFF * 2**attempt)
            log.info(
                "retry method=%s url=%s attempt=%d delay=%.1f", method, url, attempt + 1, delay
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _request_once(
        self, method: str, url: str, body: Obj | None, content_type: str, accept: str
    ) -> Obj:
        async with self.session.request(
            method,
            self.server + url,
            data=None if body is None else json.dumps(body),
            headers={**self.headers, "Accept": accept, "Content-Type": content_type},
            proxy=self.proxy,
        ) as response:
            raw = await response.read()
        if response.status >= 400:
            raise _api_error(response, raw)
        data: Obj = json.loads(raw)
        return data

    async def get(self, url: str, *, accept: str = "application/json") -> Obj | None:
        try:
            return await self.request("GET", url, accept=accept)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def get_metadata(self, url: str, *, cached: bool = False) -> Obj | None:
        """An object's metadata alone (PartialObjectMetadata), whatever its size;
        `cached`: from the API server's watch cache (resourceVersion 0), which may trail
        the newest version a little and costs the server no etcd read."""
        return await self.get(f"{url}?resourceVersion=0" if cached else url, accept=METADATA_ONLY)

    async def iter_pages(
        self, url: str, params: Mapping[str, str] | None = None, page: int = PAGE
    ) -> AsyncIterator[Obj]:
        """A collection's list responses of up to `page` items each, one consistent
        snapshot (every page has its resourceVersion); memory holds one page."""
        token = ""
        while True:
            query = {**(params or {}), "limit": page, **({"continue": token} if token else {})}
            data = await self.request("GET", f"{url}?{urlencode(query)}")
            yield data
            token = (data.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    async def iter_items(self, url: str, page: int = PAGE) -> AsyncIterator[Obj]:
        """Every item of a collection, read in pages of `page` (memory holds one page)."""
        async for data in self.iter_pages(url, page=page):
            for item in data["items"]:
                yield item

    async def watch(self, url: str, params: Mapping[str, str]) -> AsyncIterator[Obj]:
        """The events of one watch of a collection, parsed, until the server ends it
        (after `timeoutSeconds`). An error status, or an ERROR event (410 when the
        resourceVersion is too old), raises ApiError; the caller decides what next.
        Watches have their own connections: they last minutes and would hold the
        request pool's."""
        query = urlencode({**params, "watch": "1"})
        async with self.streams.get(
            f"{self.server}{url}?{query}",
            headers={**self.headers, "Accept": "application/json"},
            proxy=self.proxy,
        ) as response:
            if response.status >= 400:
                raise _api_error(response, await response.read())
            rest = b""
            async for chunk in response.content.iter_any():
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event: Obj = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise ApiError(
                            int(status.get("code") or 500),
                            str(status.get("reason") or ""),
                            json.dumps(status),
                            {},
                        )
                    yield event

    async def list_items(self, url: str) -> list[Obj]:
        items: list[Obj] = (await self.request("GET", url))["items"]
        return items

    async def create(self, collection: str, body: Obj) -> tuple[Obj, bool]:
        """Create, or return the existing object of that name; the bool says which.
        An object the API server refuses as invalid raises BackendRejected with its reason."""
        try:
            return await self.request("POST", collection, body), True
        except ApiError as e:
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
        except ApiError as e:
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
            except ApiError as e:
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
        self, plural: str, namespace: str, name: str, status: Obj, resource_version: str = ""
    ) -> Obj | None:
        """With a resource_version, only if the object is still at it (else 409)."""
        patch: Obj = {"status": status}
        if resource_version:
            patch["metadata"] = {"resourceVersion": resource_version}
        return await self.patch(path(API_VERSION, plural, namespace, name, "status"), patch)

    async def create_job(self, namespace: str, body: Obj) -> tuple[Obj, bool]:
        return await self.create(path("batch/v1", "jobs", namespace), body)

    async def patch_job(self, namespace: str, name: str, patch: Obj) -> Obj | None:
        return await self.patch(path("batch/v1", "jobs", namespace, name), patch)

    async def get_pod(self, namespace: str, name: str) -> Obj | None:
        return await self.get(path("v1", "pods", namespace, name))

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
