"""StatusWriter: one read and one merge patch per update, or per coalesce() block."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubetune.api.finetunejob import FineTuneJobPhase, FineTuneJobStatus
from kubetune.handlers.status import StatusWriter

KEY = ("finetunejobs", "ns", "job")


class RecordingKube:
    """The two calls StatusWriter makes, against one object kept in memory."""

    def __init__(self) -> None:
        self.obj: dict[str, Any] = {"metadata": {"name": "job", "generation": 1}, "status": {}}
        self.calls: list[tuple[str, Any]] = []

    async def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        self.calls.append(("get", name))
        return {**self.obj, "status": dict(self.obj["status"])}

    async def patch_custom_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append(("patch", status))
        self.obj["status"].update(status)
        return self.obj


def set_phase(phase: FineTuneJobPhase):
    def change(_: Any, old: FineTuneJobStatus) -> FineTuneJobStatus:
        return old.model_copy(update={"phase": phase})

    return change


def set_job_name(_: Any, old: FineTuneJobStatus) -> FineTuneJobStatus:
    return old.model_copy(update={"job_name": "job"})


def writer() -> tuple[StatusWriter, RecordingKube]:
    kube = RecordingKube()
    return StatusWriter(kube), kube  # type: ignore[arg-type]


def test_each_update_reads_and_patches():
    status, kube = writer()

    async def main() -> None:
        await status.update(*KEY, FineTuneJobStatus, set_phase(FineTuneJobPhase.PENDING))
        await status.update(*KEY, FineTuneJobStatus, set_job_name)

    asyncio.run(main())
    assert kube.calls == [
        ("get", "job"),
        ("patch", {"phase": "Pending"}),
        ("get", "job"),
        ("patch", {"jobName": "job"}),
    ]


def test_coalesced_updates_read_once_and_write_once():
    status, kube = writer()

    async def main() -> None:
        async with status.coalesce(*KEY):
            first = await status.update(
                *KEY, FineTuneJobStatus, set_phase(FineTuneJobPhase.PENDING)
            )
            async with status.coalesce(*KEY):  # nested: joins the outer block
                second = await status.update(*KEY, FineTuneJobStatus, set_job_name)
            assert first is not None
            assert second is not None
            assert first.phase_changed
            assert not second.phase_changed
            assert kube.calls == [("get", "job")]

    asyncio.run(main())
    assert kube.calls == [("get", "job"), ("patch", {"phase": "Pending", "jobName": "job"})]


def test_a_coalesced_block_that_raises_still_writes_what_changed():
    status, kube = writer()

    async def main() -> None:
        async with status.coalesce(*KEY):
            await status.update(*KEY, FineTuneJobStatus, set_phase(FineTuneJobPhase.PENDING))
            raise RuntimeError("retry later")

    with pytest.raises(RuntimeError, match="retry later"):
        asyncio.run(main())
    assert kube.calls[-1] == ("patch", {"phase": "Pending"})


def test_other_writers_wait_for_the_block_and_see_its_result():
    status, _kube = writer()
    seen: list[str | None] = []

    def record(_: Any, old: FineTuneJobStatus) -> FineTuneJobStatus:
        seen.append(old.phase)
        return old

    async def main() -> None:
        async with status.coalesce(*KEY):
            await status.update(*KEY, FineTuneJobStatus, set_phase(FineTuneJobPhase.RUNNING))
            other = asyncio.create_task(status.update(*KEY, FineTuneJobStatus, record))
            await asyncio.sleep(0.01)
            assert not other.done()
        await other

    asyncio.run(main())
    assert seen == [FineTuneJobPhase.RUNNING]
