"""The operator's Kopf registry as a whole."""

from __future__ import annotations

import asyncio
import inspect

from kopf._core.reactor.inventory import ResourceMemories

from kubetune.handlers.operator import SharedMemo, build_registry
from kubetune.settings import RunOptions


def test_every_resource_handler_is_a_coroutine():
    """Kopf runs a plain function in a thread pool: a thread hop for every event
    (docs/performance.md)."""
    registry = build_registry(RunOptions())
    handlers = [
        h
        for part in (registry._indexing, registry._watching, registry._changing, registry._spawning)
        for h in part.get_all_handlers()
    ]
    assert handlers
    assert [h.id for h in handlers if not inspect.iscoroutinefunction(h.fn)] == []


def test_every_object_shares_the_operators_memo():
    """Kopf would keep a copy of the memo for each object it sees (docs/performance.md)."""
    memo = SharedMemo(kube="client")
    memories = ResourceMemories()
    bodies = [{"metadata": {"uid": uid, "name": uid}} for uid in ("a", "b")]
    recalled = [asyncio.run(memories.recall(b, memobase=memo)).memo for b in bodies]
    assert recalled[0] is memo
    assert recalled[1] is memo
