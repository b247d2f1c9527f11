"""The operator's Kopf registry as a whole."""

from __future__ import annotations

import inspect

from kubetune.handlers.operator import build_registry
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
