"""The work queue (workqueue.py): one entry per key however often it is added, never
two workers on one key, and failed work tried again."""

from __future__ import annotations

import asyncio

from kubetune.workqueue import WorkQueue


def test_a_key_added_many_times_while_waiting_is_worked_on_once():
    done: list[str] = []

    async def main() -> None:
        async def work(key: str) -> None:
            done.append(key)

        queue = WorkQueue(work, workers=2, retry_after=0.01)
        for _ in range(100):
            queue.add("a")
        queue.add("b")
        await asyncio.sleep(0.05)
        await queue.close()

    asyncio.run(main())
    assert sorted(done) == ["a", "b"]


def test_a_key_added_while_worked_on_waits_and_runs_again_after():
    active: set[str] = set()
    overlaps: list[str] = []
    calls: list[int] = []

    async def main() -> None:
        release = asyncio.Event()

        async def work(key: str) -> None:
            if key in active:
                overlaps.append(key)
            active.add(key)
            calls.append(len(calls))
            if len(calls) == 1:
                await release.wait()
            active.discard(key)

        queue = WorkQueue(work, workers=4, retry_after=0.01)
        queue.add("a")
        await asyncio.sleep(0.01)
        queue.add("a")  # changed again while the first work runs
        queue.add("a")
        await asyncio.sleep(0.01)
        assert calls == [0]  # not on a second worker
        release.set()
        await asyncio.sleep(0.05)
        await queue.close()

    asyncio.run(main())
    assert (calls, overlaps) == ([0, 1], [])


def test_failed_work_is_tried_again():
    attempts: list[str] = []

    async def main() -> None:
        async def work(key: str) -> None:
            attempts.append(key)
            if len(attempts) < 3:
                raise RuntimeError("the API server is away")

        queue = WorkQueue(work, workers=1, retry_after=0.01)
        queue.add("a")
        await asyncio.sleep(0.2)
        await queue.close()

    asyncio.run(main())
    assert attempts == ["a", "a", "a"]


def test_work_that_returns_a_delay_is_worked_on_again_after_it():
    attempts: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def work(key: str) -> float | None:
            attempts.append(loop.time())
            return 0.1 if len(attempts) < 2 else None  # waits once on something

        queue = WorkQueue(work, workers=1, retry_after=10)
        queue.add("a")
        await asyncio.sleep(0.3)
        await queue.close()

    asyncio.run(main())
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 0.1
