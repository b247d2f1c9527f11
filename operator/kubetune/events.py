"""Kubernetes Events about our objects, posted in the background by our own client.

Kopf's `kopf.info()` finds its poster through the context of the Kopf handler it is
called from, and the training syncs run in our own workers (workqueue.py), outside
any; one poster serves both. `info()` and `warn()` never wait: the Event is queued,
and `WORKERS` tasks post them (each post is a request; more at once would only hold
more connections). A failed post is logged, not retried: an Event is a hint, the
status is the record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubetune.k8s import Kube, Obj, path
from kubetune.tasks import cancel

log = logging.getLogger(__name__)

WORKERS = 10
COMPONENT = "kubetune"
# The API server's limit on an Event's message.
MAX_MESSAGE = 1024
# Seconds the operator waits, when it stops, for queued Events to be posted.
DRAIN = 5.0


def event_body(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> Obj:
    """A core/v1 Event about `obj`, as `kubectl describe` shows them."""
    meta = obj["metadata"]
    if len(message) > MAX_MESSAGE:
        message = f"{message[: MAX_MESSAGE // 2 - 2]}...{message[-(MAX_MESSAGE // 2 - 1) :]}"
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")  # metav1.Time: whole seconds
    return {
        "metadata": {"namespace": meta["namespace"], "generateName": f"{meta['name']}."},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "type": type_,
        "reason": reason,
        "message": message,
        "action": reason,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),  # metav1.MicroTime
        "count": 1,
    }


class Poster:
    def __init__(self, kube: Kube, workers: int = WORKERS) -> None:
        self.kube = kube
        self._queue: asyncio.Queue[Obj] = asyncio.Queue()
        self._tasks = [asyncio.ensure_future(self._worker()) for _ in range(workers)]

    def post(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self._queue.put_nowait(event_body(obj, type_, reason, message))

    async def close(self) -> None:
        """Post what is queued (for up to DRAIN seconds), then stop."""
        try:
            await asyncio.wait_for(self._queue.join(), DRAIN)
        except TimeoutError:
            log.warning(
                "%d Events were not posted before the operator stopped", self._queue.qsize()
            )
        await cancel(self._tasks)

    async def _worker(self) -> None:
        while True:
            body = await self._queue.get()
            try:
                url = path("v1", "events", body["metadata"]["namespace"])
                await self.kube.create(url, body)
            except Exception as e:
                log.warning("could not post Event reason=%s: %s", body["reason"], e)
            finally:
                self._queue.task_done()


_poster: Poster | None = None


def start(kube: Kube) -> Poster:
    """The operator's poster, which info() and warn() use until it is stopped."""
    global _poster
    _poster = Poster(kube)
    return _poster


async def stop() -> None:
    global _poster
    poster, _poster = _poster, None
    if poster is not None:
        await poster.close()


def info(obj: Mapping[str, Any], *, reason: str, message: str) -> None:
    _post(obj, "Normal", reason, message)


def warn(obj: Mapping[str, Any], *, reason: str, message: str) -> None:
    _post(obj, "Warning", reason, message)


def _post(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    if _poster is None:
        raise RuntimeError(f"no operator is running to post the Event {reason}")
    _poster.post(obj, type_, reason, message)
