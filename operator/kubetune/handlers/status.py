"""Serialised status writes.

Several handlers write a resource's status: acceptance, the training Job and pod
events, the deployments of a model, trainer reports. Each write happens under a
per-object lock, starts from a fresh read of the object and is a merge patch of
only what changed, so writers in this process never undo each other (a phase
never goes backwards because of a stale snapshot). Several operator processes
never write at once: peering keeps one active.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from kubetune.api.common import StatusBase
from kubetune.k8s import Kube, Obj

S = TypeVar("S", bound=StatusBase)


@dataclass
class StatusWriter:
    kube: Kube
    _locks: defaultdict[tuple[str, str, str], asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )

    def lock(self, plural: str, namespace: str, name: str) -> asyncio.Lock:
        return self._locks[(plural, namespace, name)]

    def forget(self, plural: str, namespace: str, name: str) -> None:
        """Drop the lock of a deleted object."""
        self._locks.pop((plural, namespace, name), None)

    async def update(
        self,
        plural: str,
        namespace: str,
        name: str,
        model: type[S],
        change: Callable[[Obj, S], Awaitable[S] | S],
    ) -> Change[S] | None:
        """Apply `change(object, status)` to the object's current status; None if it is gone."""
        async with self.lock(plural, namespace, name):
            obj = await self.kube.get_custom(plural, namespace, name)
            if obj is None:
                return None
            old = model.model_validate(obj.get("status") or {})
            result = change(obj, old)
            new: S = await result if asyncio.iscoroutine(result) else result  # type: ignore[assignment]
            patch = status_patch(old, new)
            if patch:
                await self.kube.patch_custom_status(plural, namespace, name, patch)
            return Change(obj, old, new)


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
