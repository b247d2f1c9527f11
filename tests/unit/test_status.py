"""StatusWriter: one read and one merge patch per update, or per coalesce() block."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubetune.api.finetunejob import FineTuneJobPhase, FineTuneJobStatus
from kubetune.handlers.status import StatusWriter
from tests.unit.statuskube import OneObjectKube

KEY = ("finetunejobs", "ns", "job")


def set_phase(phase: FineTuneJobPhase):
    def change(_: Any, old: FineTuneJobStatus) -> FineTuneJobStatus:
        return old.model_copy(update={"phase": phase})

    return change


def set_job_name(_: Any, old: FineTuneJobStatus) -> FineTuneJobStatus:
    return old.model_copy(update={"job_name": "job"})


def writer() -> tuple[StatusWriter, OneObjectKube]:
    kube = OneObjectKube(
        {"metadata": {"name": "job", "generation": 1, "resourceVersion": "1"}, "status": {}}
    )
    return StatusWriter(kube), kube  # type: ignore[arg-type]


def test_an_update_reads_once_then_starts_from_the_version_it_wrote():
    status, kube = writer()

    async def main() -> None:
        await status.update(*KEY, FineTuneJobStatus, set_phase(FineTuneJobPhase.PENDING))
        await status.update(*KEY, FineTuneJobStatus, set_job_name)

    asyncio.run(main())
    assert kube.calls == [
        ("get", "job"),
        ("patch", {"phase": "Pending"}),
        ("patch", {"jobName": "job"}),
    ]
    assert kube.obj["status"] == {"phase": "Pending", "jobName": "job"}


def test_an_update_over_someone_elses_write_is_computed_again_from_a_read():
    """A trainer's report (another writer) between two updates: nothing of it is lost."""
    status, kube = writer()
    seen: list[dict[str, Any]] = []

    def running(obj: Any, old: FineTuneJobStatus) -> FineTuneJobStatus:
        seen.append(dict(obj["status"]))
        return old.model_copy(update={"phase": FineTuneJobPhase.RUNNING})

    async def main() -> None:
        await status.update(*KEY, FineTuneJobStatus, set_phase(FineTuneJobPhase.PENDING))
        kube.obj["status"]["progress"] = {"step": 3}  # written by someone else
        kube.obj["metadata"]["resourceVersion"] = "99"
        await status.update(*KEY, FineTuneJobStatus, running)

    asyncio.run(main())
    assert [c[0] for c in kube.calls] == ["get", "patch", "patch", "get", "patch"]
    assert seen[-1]["progress"] == {"step": 3}  # computed again from the fresh read
    assert kube.obj["status"] == {"phase": "Running", "progress": {"step": 3}}


def test_a_coalesced_block_over_someone_elses_write_is_written_anyway():
    """Its steps are not done again (they created things): its changes go over the
    object as it is now."""
    status, kube = writer()

    async def main() -> None:
        await status.update(*KEY, FineTuneJobStatus, set_phase(FineTuneJobPhase.PENDING))
        async with status.coalesce(*KEY):
            await status.update(*KEY, FineTuneJobStatus, set_job_name)
            kube.obj["metadata"]["resourceVersion"] = "99"  # e.g. the spec was edited

    asyncio.run(main())
    assert [c[0] for c in kube.calls] == ["get", "patch", "patch", "patch"]
    assert kube.obj["status"] == {"phase": "Pending", "jobName": "job"}


def test_an_update_of_a_deleted_object_says_it_is_gone():
    status, kube = writer()

    async def gone(*_: Any, **__: Any) -> None:
        return None

    async def main() -> object:
        await status.update(*KEY, FineTuneJobStatus, set_phase(FineTuneJobPhase.PENDING))
        kube.patch_custom_status = gone  # type: ignore[method-assign]
        return await status.update(*KEY, FineTuneJobStatus, set_job_name)

    assert asyncio.run(main()) is None


def test_kept_versions_are_bounded(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("kubetune.handlers.status.KEEP", 2)
    status, kube = writer()

    async def main() -> None:
        for name in ("a", "b", "c", "a"):
            await status.update("finetunejobs", "ns", name, FineTuneJobStatus, set_job_name)

    asyncio.run(main())
    # "a" was dropped for "c", so it is read again.
    assert [c for c in kube.calls if c[0] == "get"] == [("get", n) for n in ("a", "b", "c", "a")]


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


def test_an_event_of_another_version_makes_the_next_update_read_the_object():
    """What acts on a spec edit or an annotation must see it: Kopf calls the event
    handlers (saw) first."""
    status, kube = writer()

    def event(version: str) -> dict[str, Any]:
        return {"metadata": {"namespace": "ns", "name": "job", "resourceVersion": version}}

    async def main() -> None:
        await status.update(*KEY, FineTuneJobStatus, set_phase(FineTuneJobPhase.PENDING))
        status.saw("finetunejobs", "MODIFIED", event("2"))  # the event of the write above
        await status.update(*KEY, FineTuneJobStatus, set_job_name)
        status.saw("finetunejobs", "MODIFIED", event("7"))  # someone else's change
        await status.update(*KEY, FineTuneJobStatus, set_phase(FineTuneJobPhase.RUNNING))

    asyncio.run(main())
    assert [c[0] for c in kube.calls] == ["get", "patch", "patch", "get", "patch"]


def test_a_deleted_objects_kept_version_and_lock_are_dropped():
    status, kube = writer()
    deleted = {"metadata": {"namespace": "ns", "name": "job", "resourceVersion": "2"}}

    async def main() -> None:
        await status.update(*KEY, FineTuneJobStatus, set_phase(FineTuneJobPhase.PENDING))
        status.saw("finetunejobs", "DELETED", deleted)  # its version is the kept one's
        assert KEY not in status._locks
        await status.update(*KEY, FineTuneJobStatus, set_job_name)

    asyncio.run(main())
    assert [c[0] for c in kube.calls] == ["get", "patch", "get", "patch"]
