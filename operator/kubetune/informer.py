"""One collection's labelled objects, listed and then watched, as client-go's reflector
does: the list (in pages) gives the objects and a resourceVersion, the watch goes on
from there with bookmarks, an expired resourceVersion (410 Gone) lists again, and
any other failure watches again from the last version seen after a backoff.

The API server filters by label, so only the operator's own objects are decoded
(Kopf filters on the client: it decoded every pod of a watched namespace). Each
object goes to `on_event` as it is read and is not kept here: the caller keeps
what it needs of it (handlers/children.py), so memory does not grow with the
number of events waiting to be handled (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from kubetune.k8s import BACKOFF, BACKOFF_CAP, ApiError, Kube, Obj, path

log = logging.getLogger(__name__)

# Seconds a watch request lasts before the server ends it and it is made again.
WATCH_SECONDS = 300

Name = tuple[str, str]
"""An object's namespace and name."""


@dataclass
class Informer:
    kube: Kube
    api_version: str
    plural: str
    namespace: str | None
    """One namespace's objects, or (None) the cluster's."""
    selector: str
    """A label selector, applied by the API server."""
    on_event: Callable[[str, Obj], None]
    """Called with ADDED, MODIFIED or DELETED and the object; a list's objects come as
    ADDED."""
    on_listed: Callable[[str | None, set[Name]], None]
    """Called after each complete list with the namespace and every object it returned:
    what the caller holds of that namespace beyond them was deleted while no watch was
    open."""
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the first list has been passed on."""

    @property
    def url(self) -> str:
        return path(self.api_version, self.plural, self.namespace)

    async def run(self) -> None:
        version: str | None = None
        failures = 0
        while True:
            try:
                if version is None:
                    version = await self._list()
                    self.synced.set()
                version = await self._watch(version)
                failures = 0
                continue
            except ApiError as e:
                if e.status == 410:
                    log.info("%s: the watch expired (410 Gone); listing again", self.url)
                    version = None
                elif e.status == 401:
                    self.kube.relogin()
                else:
                    log.warning("%s: watch failed: %s", self.url, e)
            except (aiohttp.ClientError, TimeoutError) as e:
                log.info("%s: watch dropped (%s); watching again", self.url, e or type(e).__name__)
            except Exception:
                # A bug of ours must not stop the watch for good: logged, and listed again.
                log.exception("%s: watch failed; listing again", self.url)
                version = None
            failures += 1
            await asyncio.sleep(min(BACKOFF_CAP, BACKOFF * 2 ** min(failures - 1, 8)))

    async def _list(self) -> str:
        listed: set[Name] = set()
        version = ""
        async for page in self.kube.iter_pages(self.url, {"labelSelector": self.selector}):
            version = page["metadata"]["resourceVersion"]
            for obj in page["items"]:
                meta = obj["metadata"]
                listed.add((meta["namespace"], meta["name"]))
                self.on_event("ADDED", obj)
        self.on_listed(self.namespace, listed)
        return version

    async def _watch(self, version: str) -> str:
        """Watch from `version` until the server ends the watch; the last version seen."""
        params = {
            "labelSelector": self.selector,
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        async for event in self.kube.watch(self.url, params):
            obj = event["object"]
            version = obj["metadata"]["resourceVersion"]
            if event["type"] != "BOOKMARK":
                self.on_event(event["type"], obj)
        return version
