"""The Foundry poll loop (handlers/foundry.py `poll`): a wait that Azure asked for
(Retry-After) ends early only for a spec the poll has not read yet, or for another
object's event (a model's, for its deployments), never for the poll's own writes."""

from __future__ import annotations

import asyncio

import kopf
import pytest

from kubetune.errors import BackendUnavailable
from kubetune.handlers.foundry import Step, poll, read_generation, wake
from kubetune.handlers.pollers import Peering, Pollers
from kubetune.settings import FoundrySettings

KEY = ("FineTuneJob", "team-a", "xbox")
STANDALONE = Peering(kube=None, name=None, priority=0, clusterwide=True)  # type: ignore[arg-type]


def polling_memo() -> kopf.Memo:
    memo = kopf.Memo()
    memo.nudges = {}
    memo.pollers = Pollers(STANDALONE)
    return memo


async def throttled_once(
    memo: kopf.Memo, retry_after: float, during_wait: tuple[int | None, ...] = ()
) -> float:
    """Poll a step that is throttled once, while the step's own status write comes back
    as an event of the generation it read (1); `during_wait`: the generations of events
    in the middle of the wait (None: another object's). Returns the seconds between the
    two steps."""
    times: list[float] = []
    loop = asyncio.get_running_loop()

    async def step() -> Step:
        times.append(loop.time())
        read_generation(memo, KEY, {"metadata": {"generation": 1}})
        wake(memo, KEY, 1)
        if len(times) == 1:
            for generation in during_wait:
                loop.call_later(0.1, wake, memo, KEY, generation)
            raise BackendUnavailable("throttled", retry_after=retry_after)
        return None

    await asyncio.wait_for(poll(memo, KEY, step, FoundrySettings()), 10)
    assert memo.nudges == {}  # forgotten once done
    return times[1] - times[0]


def test_the_polls_own_writes_do_not_cut_azures_retry_after_short():
    waited = asyncio.run(throttled_once(polling_memo(), retry_after=1.0))
    assert waited >= 0.95


def test_an_older_spec_event_does_not_wake_the_poll():
    waited = asyncio.run(throttled_once(polling_memo(), retry_after=1.0, during_wait=(1,)))
    assert waited >= 0.95


@pytest.mark.parametrize("generation", [2, None], ids=["spec-changed", "model-event"])
def test_a_newer_spec_or_another_objects_event_wakes_the_poll(generation):
    waited = asyncio.run(
        throttled_once(polling_memo(), retry_after=30.0, during_wait=(generation,))
    )
    assert waited < 5
