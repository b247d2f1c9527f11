"""Background polls (handlers/pollers.py): they run only while open, restart after an
unexpected error, and are forgotten once done or dropped."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from kubetune.handlers import pollers as module
from kubetune.handlers.pollers import Peering, Pollers, outranked

KEY = ("FineTuneJob", "team-a", "xbox")
STANDALONE = Peering(kube=None, name=None, priority=0, clusterwide=True)  # type: ignore[arg-type]
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def peer(priority: int, seconds_ago: int, lifetime: int = 60) -> dict:
    lastseen = (NOW - timedelta(seconds=seconds_ago)).isoformat()
    return {"priority": priority, "lifetime": lifetime, "lastseen": lastseen}


@pytest.mark.parametrize(
    ("peers", "expected"),
    [
        pytest.param({"me": peer(10, 1)}, False, id="alone"),
        pytest.param({"me": peer(10, 1), "other": peer(5, 1)}, False, id="lower-peer"),
        pytest.param({"me": peer(10, 1), "other": peer(20, 1)}, True, id="higher-peer"),
        pytest.param({"me": peer(10, 1), "other": peer(20, 90)}, False, id="higher-but-dead"),
        pytest.param({}, False, id="no-record-yet"),
    ],
)
def test_a_live_peer_with_a_higher_priority_outranks_us(peers, expected):
    assert outranked(peers, 10, NOW) is expected


def test_polls_stop_when_dropped_or_closed():
    async def main() -> None:
        pollers, started = Pollers(STANDALONE), asyncio.Event()
        other = ("ModelDeployment", "team-a", "xbox")

        async def forever() -> None:
            started.set()
            await asyncio.Event().wait()

        pollers.want(KEY, forever)
        await asyncio.wait_for(started.wait(), 1)
        task = pollers.tasks[KEY]
        pollers.drop(KEY)
        await asyncio.sleep(0.01)
        assert task.cancelled()
        assert pollers.tasks == {}
        pollers.want(KEY, forever)
        pollers.want(other, forever)
        tasks = list(pollers.tasks.values())
        await pollers.close()
        assert pollers.tasks == {}
        assert all(t.cancelled() for t in tasks)

    asyncio.run(main())


def test_a_finished_poll_is_forgotten_and_a_failing_one_retried(monkeypatch):
    monkeypatch.setattr(module, "RETRY_BACKOFF", 0.01)

    async def main() -> None:
        pollers, calls = Pollers(STANDALONE), []

        async def flaky() -> None:
            calls.append(1)
            if len(calls) < 3:
                raise RuntimeError("Azure said no")

        pollers.want(KEY, flaky)
        pollers.want(KEY, flaky)  # asked again by the next event: still one poll
        for _ in range(100):
            if not pollers.tasks:
                break
            await asyncio.sleep(0.01)
        assert len(calls) == 3
        assert pollers.tasks == {}

    asyncio.run(main())
