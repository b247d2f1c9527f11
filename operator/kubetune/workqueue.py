"""Keys to work on, as client-go's workqueue: a key added while it waits is still one
item, and a key is never worked on by two workers at once (added while it is being
worked on, it waits until that ends). A burst of events therefore costs one entry per
object, whatever their number, and the work reads the latest state of its object.
A work that returns a number of seconds asks for its key again after them (it waits on
something); a failed work is logged and its key added again after `retry_after` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from kubetune.tasks import cancel

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(
        self, work: Callable[[K], Awaitable[float | None]], *, workers: int, retry_after: float
    ) -> None:
        self._work = work
        self._retry_after = retry_after
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._waiting: set[K] = set()
        self._active: set[K] = set()
        self._again: set[K] = set()
        self._tasks = [asyncio.ensure_future(self._worker()) for _ in range(workers)]

    def add(self, key: K) -> None:
        if key in self._active:
            self._again.add(key)
        elif key not in self._waiting:
            self._waiting.add(key)
            self._queue.put_nowait(key)

    async def close(self) -> None:
        await cancel(self._tasks)

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            key = await self._queue.get()
            self._waiting.discard(key)
            self._active.add(key)
            again: float | None = self._retry_after
            try:
                again = await self._work(key)
            except Exception:
                log.exception("%s: failed (again in %.0f s)", key, self._retry_after)
            finally:
                self._active.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self.add(key)
            if again is not None:
                loop.call_later(again, self.add, key)
