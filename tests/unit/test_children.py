"""The view of training Jobs and pods (handlers/children.py): what it keeps and drops."""

from __future__ import annotations

from kubetune.handlers.children import Children

KEY = ("team-a", "xbox")


def obj(name: str, phase: str = "Running") -> dict:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": {"big": "x" * 100}},
        "spec": {"nodeName": "gpu-1", "containers": [{"name": "trainer"}]},
        "status": {"phase": phase},
    }


def test_keeps_what_the_status_logic_reads_only():
    view = Children()
    view.saw_job(KEY, obj("xbox"), deleted=False)
    view.saw_pod(KEY, obj("xbox-a"), deleted=False)
    (pod,) = view.pods_of(KEY)
    assert pod["spec"] == {"nodeName": "gpu-1"}
    assert "labels" not in pod["metadata"]
    assert view.job(KEY)["status"] == {"phase": "Running"}


def test_deleted_pods_and_jobs_leave_the_view():
    view = Children()
    view.saw_job(KEY, obj("xbox"), deleted=False)
    view.saw_pod(KEY, obj("xbox-a"), deleted=False)
    view.saw_pod(KEY, obj("xbox-b"), deleted=False)
    view.saw_pod(KEY, obj("xbox-a"), deleted=True)
    assert [p["metadata"]["name"] for p in view.pods_of(KEY)] == ["xbox-b"]
    view.saw_pod(KEY, obj("xbox-b"), deleted=True)
    view.saw_job(KEY, obj("xbox"), deleted=True)
    assert (view.jobs, view.pods) == ({}, {})


def test_nothing_is_kept_for_a_finished_job():
    view = Children()
    view.saw_job(KEY, obj("xbox"), deleted=False)
    view.saw_pod(KEY, obj("xbox-a"), deleted=False)
    view.finish(KEY)
    view.saw_pod(KEY, obj("xbox-a", "Succeeded"), deleted=False)  # e.g. the Job's TTL cleanup
    view.saw_job(KEY, obj("xbox"), deleted=False)
    assert (view.jobs, view.pods, view.finished) == ({}, {}, {KEY})


def test_a_deleted_job_can_come_back_under_its_name():
    view = Children()
    view.finish(KEY)
    view.forget(KEY)
    view.saw_job(KEY, obj("xbox"), deleted=False)
    assert view.job(KEY) is not None
    assert not view.finished
