"""Serialised status writes.

Several handlers write a resource's status: acceptance, the training Job and pod
events, the deployments of a model, trainer reports. Each write happens under a
per-object lock, starts from a fresh read of the object and is a merge patch of
only what changed, so writers in this process never undo each other (a phase
never goes backwards because of a stale snapshot). Several operator processes
never write at once: peering keeps one active.

A handler that changes the status several times in one go (accept the spec,
resolve inputs, create the Job, record it) wraps that in `coalesce()`: one read,
one patch at the end, and the lock held in between, so each step costs no API call
of its own (the scale benchmark counts API writes per job; see docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from kubetune.api.common import StatusBase
from kubetune.k8s import Kube, Obj

S = TypeVar("S", bound=StatusBase)
Key = tuple[str, str, str]


@dataclass
class _Pending:
    """One object's status as read, and with the changes made since (not yet written)."""

    owner: asyncio.Task[Any] | None
    obj: Obj | None = None
    read: StatusBase | None = None
    status: StatusBase | None = None


@dataclass
class StatusWriter:
    kube: Kube
    _locks: defaultdict[Key, asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )
    _coalescing: dict[Key, _Pending] = field(default_factory=dict)

    def lock(self, plural: str, namespace: str, name: str) -> asyncio.Lock:
        return self._locks[(plural, namespace, name)]

    def forget(self, plural: str, namespace: str, name: str) -> None:
        """Drop the lock of a deleted object."""
        self._locks.pop((plural, namespace, name), None)

    @contextlib.asynccontextmanager
    async def coalesce(self, plural: str, namespace: str, name: str) -> AsyncIterator[None]:
        """Within this block, this task's update()s of the object read it once and are
        written as one patch when the block ends (also when it raises); other writers
        of the object wait until then. Nested blocks join the outer one."""
        key = (plural, namespace, name)
        task = asyncio.current_task()
        outer = self._coalescing.get(key)
        if outer is not None and outer.owner is task:
            yield
            return
        async with self._locks[key]:
            pending = self._coalescing[key] = _Pending(task)
            try:
                yield
            finally:
                del self._coalescing[key]
                await self._write(key, pending)

    async def update(
        self,
        plural: str,
        namespace: str,
        name: str,
        model: type[S],
        change: Callable[[Obj, S], Awaitable[S] | S],
    ) -> Change[S] | None:
        """Apply `change(object, status)` to the object's current status; None if it is gone."""
        key = (plural, namespace, name)
        pending = self._coalescing.get(key)
        if pending is not None and pending.owner is asyncio.current_task():
            return await self._apply(key, pending, model, change)
        async with self._locks[key]:
            pending = _Pending(None)
            done = await self._apply(key, pending, model, change)
            await self._write(key, pending)
            return done

    async def _apply(
        self,
        key: Key,
        pending: _Pending,
        model: type[S],
        change: Callable[[Obj, S], Awaitable[S] | S],
    ) -> Change[S] | None:
        if pending.obj is None:
            obj = await self.kube.get_custom(*key)
            if obj is None:
                return None
            pending.obj = obj
            pending.read = pending.status = model.model_validate(obj.get("status") or {})
        old = cast(S, pending.status)
        result = change(pending.obj, old)
        new: S = await result if asyncio.iscoroutine(result) else result  # type: ignore[assignment]
        pending.status = new
        return Change(pending.obj, old, new)

    async def _write(self, key: Key, pending: _Pending) -> None:
        if pending.read is None or pending.status is None:
            return
        patch = status_patch(pending.read, pending.status)
        if patch:
            await self.kube.patch_custom_status(*key, patch)


@dataclass(frozen=True)
class Change(Generic[S]):
    obj: Obj
    old: S
    new: S

    @property
    def phase_changed(self) -> bool:
        return self.old.phase != self.new.phase


def status_patch(old: StatusBase, new: StatusBase) -> dict[str, Any]:
    """Top-level status fields that differ, for a merge patch (removed fields become null)."""
    before = old.model_dump(mode="json", by_alias=True, exclude_none=True)
    after = new.model_dump(mode="json", by_alias=True, exclude_none=True)
    patch: dict[str, Any] = {k: v for k, v in after.items() if before.get(k) != v}
    patch.update({k: None for k in before if k not in after})
    return patch
