"""kubetune's errors for work queued outside Kopf (handlers/errors.py `queued`): the
same meaning as for Kopf's handlers, as the work queue's retries."""

from __future__ import annotations

import asyncio
import logging

import pytest

from kubetune.errors import BackendRejected, BackendUnavailable, InvalidSpec, NotReady
from kubetune.handlers.errors import queued


def outcome(error: Exception | None) -> float | None:
    async def work() -> None:
        if error is not None:
            raise error

    return asyncio.run(queued(work(), "ns/job"))


def test_done_work_is_not_tried_again() -> None:
    assert outcome(None) is None


@pytest.mark.parametrize(
    ("error", "delay"),
    [(NotReady("dataset x is missing", retry_after=3), 3), (BackendUnavailable("busy"), 30)],
)
def test_a_temporary_error_asks_again_after_its_delay(
    error: Exception, delay: float, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        assert outcome(error) == delay
    assert f"ns/job: {error} (again in {delay:.0f} s)" in caplog.text


@pytest.mark.parametrize("error", [InvalidSpec("spec.x: bad"), BackendRejected("refused")])
def test_a_permanent_error_is_logged_and_not_tried_again(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    assert outcome(error) is None
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", f"ns/job: {error}")
    ]


def test_any_other_error_propagates_for_the_queue_to_retry() -> None:
    with pytest.raises(RuntimeError, match="connection reset"):
        outcome(RuntimeError("connection reset"))
