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

The "fresh read" is the object as this writer last read or wrote it, when it still
has it (the latest `KEEP` objects, without their managedFields): each patch is
conditional on the version it was computed from, so when anyone else changed the
object since (a trainer's report, a spec edit, Kopf's annotations) the API server
answers 409, and the update is computed again from a real read. A new spec,
annotation or deletion is read before a handler acts on it: the kinds' event
handlers pass each event to `saw`. A job's later status writes (Running,
Succeeded) therefore cost no read of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from kubetune.api.common import StatusBase
from kubetune.k8s import ApiError, Kube, Obj

S = TypeVar("S", bound=StatusBase)
Key = tuple[str, str, str]

# Objects whose last version read or written is kept: about 3 KB each.
KEEP = 1000


@dataclass
class _Pending:
    """One object's status as read, and with the changes made since (not yet written)."""

    owner: asyncio.Task[Any] | None
    obj: Obj | None = None
    read: StatusBase | None = None
    status: StatusBase | None = None
    gone: bool = False


@dataclass
class StatusWriter:
    kube: Kube
    _locks: defaultdict[Key, asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )
    _coalescing: dict[Key, _Pending] = field(default_factory=dict)
    _known: OrderedDict[Key, Obj] = field(default_factory=OrderedDict)

    def lock(self, plural: str, namespace: str, name: str) -> asyncio.Lock:
        return self._locks[(plural, namespace, name)]

    def saw(self, plural: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        """An event of the object (Kopf calls event handlers before the handlers that
        act on it): a kept version other than the event's is dropped, so what acts on
        a new spec, annotation or deletion reads it; a deleted object's lock and kept
        version are dropped."""
        meta = body["metadata"]
        key = (plural, meta["namespace"], meta["name"])
        kept = self._known.get(key)
        if event_type == "DELETED":
            self._locks.pop(key, None)
            self._known.pop(key, None)
        elif kept is not None and kept["metadata"].get("resourceVersion") != meta.get(
            "resourceVersion"
        ):
            del self._known[key]

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
                if not await self._write(key, pending):
                    # Changed since: the block's steps cannot be done again (a Job was
                    # created), so its changes are written over the object as it is.
                    await self._write(key, pending, conditional=False)

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
            while True:
                pending = _Pending(None)
                done = await self._apply(key, pending, model, change)
                if await self._write(key, pending):
                    return None if pending.gone else done

    async def _apply(
        self,
        key: Key,
        pending: _Pending,
        model: type[S],
        change: Callable[[Obj, S], Awaitable[S] | S],
    ) -> Change[S] | None:
        if pending.obj is None:
            obj = self._known.get(key) or await self.kube.get_custom(*key)
            if obj is None:
                return None
            pending.obj = obj
            pending.read = pending.status = model.model_validate(obj.get("status") or {})
        old = cast(S, pending.status)
        result = change(pending.obj, old)
        new: S = await result if asyncio.iscoroutine(result) else result  # type: ignore[assignment]
        pending.status = new
        return Change(pending.obj, old, new)

    async def _write(self, key: Key, pending: _Pending, *, conditional: bool = True) -> bool:
        """Patch what changed, if the object is still at the version read (unless not
        `conditional`); False when it was not (409), and the kept version is dropped."""
        if pending.obj is None or pending.read is None or pending.status is None:
            return True
        patch = status_patch(pending.read, pending.status)
        if not patch:
            self._keep(key, pending.obj)
            return True
        version = pending.obj["metadata"].get("resourceVersion", "") if conditional else ""
        try:
            obj = await self.kube.patch_custom_status(*key, patch, resource_version=version)
        except ApiError as e:
            if e.status != 409 or not version:
                raise
            self._known.pop(key, None)
            return False
        if obj is None:
            pending.gone = True
            self._known.pop(key, None)
        else:
            self._keep(key, obj)
        return True

    def _keep(self, key: Key, obj: Obj) -> None:
        meta = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
        self._known[key] = {**obj, "metadata": meta}
        self._known.move_to_end(key)
        while len(self._known) > KEEP:
            self._known.popitem(last=False)


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
