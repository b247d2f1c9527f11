"""Background polls (of Azure), one task per Foundry job or deployment.

Kopf daemons would serve, but Kopf keeps the latest body of every object of a kind
that has a daemon, whatever the daemon's filter: 19 KB for each FineTuneJob, local
ones included (docs/performance.md). These tasks are asked for by the objects'
event handlers instead (`want`), which Kopf calls only while this replica is the
active one. A replica that peering pauses later (a peer with a higher priority came)
stops acting too: each poll step first asks `Peering.outranked`, as Kopf itself
decides, from the peering object's record of live peers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubetune.handlers.errors import RETRY_BACKOFF
from kubetune.k8s import Kube, path
from kubetune.tasks import cancel

log = logging.getLogger(__name__)

Key = tuple[str, str, str]
Run = Callable[[], Awaitable[None]]


# Seconds between checks while another replica acts.
PAUSED_RECHECK = 5.0
# Seconds an answer of the peering object is used again: every training sync asks.
PEERING_FRESH = 1.0


def outranked(peers: Mapping[str, Any], priority: int, now: datetime) -> bool:
    """Whether a live peer (Kopf's peering status: id -> priority, lifetime, lastseen)
    has a higher priority than ours."""
    for peer in peers.values():
        lastseen = datetime.fromisoformat(str(peer.get("lastseen")))
        alive = lastseen + timedelta(seconds=int(peer.get("lifetime", 60))) > now
        if alive and int(peer.get("priority", 0)) > priority:
            return True
    return False


@dataclass
class Peering:
    kube: Kube
    name: str | None
    """The peering object's name; None when running standalone."""
    priority: int
    clusterwide: bool
    _answers: dict[str, tuple[float, bool]] = field(default_factory=dict)

    async def outranked(self, namespace: str) -> bool:
        if self.name is None:
            return False
        url = (
            path("kopf.dev/v1", "clusterkopfpeerings", None, self.name)
            if self.clusterwide
            else path("kopf.dev/v1", "kopfpeerings", namespace, self.name)
        )
        now = asyncio.get_running_loop().time()
        when, answer = self._answers.get(url, (-PEERING_FRESH, False))
        if now - when < PEERING_FRESH:
            return answer
        obj = await self.kube.get(url)
        answer = outranked((obj or {}).get("status") or {}, self.priority, datetime.now(UTC))
        self._answers[url] = (now, answer)
        return answer

    async def wait_turn(self, namespace: str) -> None:
        """Return once no live peer outranks this replica."""
        while await self.outranked(namespace):
            await asyncio.sleep(PAUSED_RECHECK)


@dataclass
class Pollers:
    peering: Peering
    tasks: dict[Key, asyncio.Task[None]] = field(default_factory=dict)

    def want(self, key: Key, run: Run) -> None:
        """Poll with `run` until it returns, unless a poll of this object is running."""
        if key not in self.tasks:
            self.tasks[key] = asyncio.ensure_future(self._keep(key, run))

    def drop(self, key: Key) -> None:
        """No more polls of this object (it is being deleted)."""
        task = self.tasks.pop(key, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        """Stop every poll (the operator stops)."""
        tasks = list(self.tasks.values())
        self.tasks.clear()
        await cancel(tasks)

    async def _keep(self, key: Key, run: Run) -> None:
        """Run until done; an unexpected error is logged and run again after a backoff,
        as Kopf does for a daemon."""
        try:
            while True:
                try:
                    await run()
                    return
                except Exception:
                    log.exception("%s %s/%s: poll failed (again in %d s)", *key, RETRY_BACKOFF)
                    await asyncio.sleep(RETRY_BACKOFF)
        finally:
            if self.tasks.get(key) is asyncio.current_task():
                del self.tasks[key]
