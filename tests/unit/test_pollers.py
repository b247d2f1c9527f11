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


def test_polls_wait_for_open_and_stop_when_closed():
    async def main() -> None:
        pollers, started = Pollers(STANDALONE), asyncio.Event()

        async def forever() -> None:
            started.set()
            await asyncio.Event().wait()

        pollers.want(KEY, forever)
        await asyncio.sleep(0.01)
        assert not started.is_set()  # a paused (or not yet active) replica polls nothing
        pollers.open()
        await asyncio.wait_for(started.wait(), 1)
        await pollers.close()
        assert pollers.tasks == {}
        assert KEY in pollers.wanted  # started again when opened
        started.clear()
        pollers.open()
        await asyncio.wait_for(started.wait(), 1)
        pollers.drop(KEY)
        await asyncio.sleep(0.01)
        assert (pollers.tasks, pollers.wanted) == ({}, {})

    asyncio.run(main())


def test_a_finished_poll_is_forgotten_and_a_failing_one_retried(monkeypatch):
    monkeypatch.setattr(module, "RETRY_BACKOFF", 0.01)

    async def main() -> None:
        pollers, calls = Pollers(STANDALONE), []

        async def flaky() -> None:
            calls.append(1)
            if len(calls) < 3:
                raise RuntimeError("Azure said no")

        pollers.open()
        pollers.want(KEY, flaky)
        pollers.want(KEY, flaky)  # asked again by the next event: still one poll
        for _ in range(100):
            if not pollers.wanted:
                break
            await asyncio.sleep(0.01)
        assert len(calls) == 3
        assert (pollers.tasks, pollers.wanted) == ({}, {})

    asyncio.run(main())


@pytest.mark.parametrize("opened", [True, False])
def test_close_with_nothing_running(opened):
    async def main() -> None:
        pollers = Pollers(STANDALONE)
        if opened:
            pollers.open()
        await pollers.close()
        assert not pollers.running

    asyncio.run(main())
