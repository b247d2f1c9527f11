"""The informer's recovery (informer.py); its lists and watches against the real API
server are in tests/cluster/test_client.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from kubetune.informer import Informer
from kubetune.k8s import ApiError

POD = {"metadata": {"namespace": "ns", "name": "p", "resourceVersion": "5"}}


class ScriptedKube:
    """Our client's list and watch, answering from a script."""

    def __init__(self, watches: list[list[dict[str, Any]] | ApiError]) -> None:
        self.watches = watches
        self.lists = 0
        self.watched_from: list[str] = []

    async def iter_pages(self, url: str, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        self.lists += 1
        yield {"metadata": {"resourceVersion": "5"}, "items": [POD]}

    async def watch(self, url: str, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        self.watched_from.append(params["resourceVersion"])
        await asyncio.sleep(0.01)
        script = self.watches.pop(0) if self.watches else []
        if isinstance(script, ApiError):
            raise script
        for event in script:
            yield event


def run(kube: ScriptedKube, on_event, seconds: float = 1.0) -> None:
    informer = Informer(
        kube,  # type: ignore[arg-type]
        "v1",
        "pods",
        "ns",
        selector="kubetune.io/finetunejob",
        on_event=on_event,
        on_listed=lambda *_: None,
    )

    async def main() -> None:
        task = asyncio.ensure_future(informer.run())
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_an_expired_watch_lists_again_and_a_watch_goes_on_from_the_last_version():
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}
    kube = ScriptedKube([[bookmark], ApiError(410, "Gone", "", {})])
    seen: list[str] = []
    run(kube, lambda event, obj: seen.append(event))
    assert kube.watched_from[:3] == ["5", "9", "5"]  # after the bookmark; after the relist
    assert kube.lists >= 2
    assert seen[:2] == ["ADDED", "ADDED"]  # bookmarks are not events


def test_a_failing_callback_does_not_stop_the_watch():
    kube = ScriptedKube([])
    calls: list[str] = []

    def on_event(event: str, obj: dict[str, Any]) -> None:
        calls.append(event)
        if len(calls) == 1:
            raise KeyError("a bug of ours")

    run(kube, on_event)
    assert len(calls) >= 2  # listed again after the failure
    assert kube.watched_from  # and then watched
