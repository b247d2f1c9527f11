"""The view of training Jobs and pods (handlers/children.py): what it keeps and drops."""

from __future__ import annotations

import asyncio

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


def labelled(name: str, namespace: str = "team-a", job: str = "xbox") -> dict:
    body = obj(name)
    body["metadata"].update(namespace=namespace, labels={"kubetune.io/finetunejob": job})
    return body


def test_events_are_filed_under_their_job_by_label():
    view = Children()
    assert view.saw("jobs", "ADDED", labelled("xbox")) == KEY
    assert view.saw("pods", "MODIFIED", labelled("xbox-a")) == KEY
    assert view.saw("pods", "ADDED", labelled("other-a", "team-b", "other")) == ("team-b", "other")
    assert [p["metadata"]["name"] for p in view.pods_of(KEY)] == ["xbox-a"]
    assert view.saw("pods", "DELETED", labelled("xbox-a")) == KEY
    assert view.pods_of(KEY) == []


def test_a_list_drops_what_was_deleted_unseen_in_its_namespace_only():
    view = Children()
    view.saw("jobs", "ADDED", labelled("xbox"))
    view.saw("pods", "ADDED", labelled("xbox-a"))
    view.saw("pods", "ADDED", labelled("xbox-b"))
    view.saw("pods", "ADDED", labelled("other-a", "team-b", "other"))
    assert view.listed("pods", "team-a", {("team-a", "xbox-b")}) == {KEY}
    assert [p["metadata"]["name"] for p in view.pods_of(KEY)] == ["xbox-b"]
    assert view.pods_of(("team-b", "other")) != []  # another namespace's list
    assert view.listed("pods", None, set()) == {KEY, ("team-b", "other")}
    assert view.pods == {}
    assert view.listed("jobs", "team-a", {("team-a", "xbox")}) == set()
    assert view.listed("jobs", "team-a", set()) == {KEY}
    assert view.job(KEY) is None


class Listing:
    """Kube.iter_items over fixed FineTuneJobs, by namespace."""

    def __init__(self, jobs: list[dict]) -> None:
        self.jobs = jobs

    async def iter_items(self, url: str):
        for job in self.jobs:
            if f"/namespaces/{job['metadata']['namespace']}/" in url:
                yield job


def ftj(namespace: str, name: str, base: str, phase: str | None) -> dict:
    return {
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"baseModel": base},
        "status": {"phase": phase} if phase else {},
    }


def test_load_knows_finished_jobs_and_the_models_unfinished_ones_continue_from():
    listing = Listing(
        [
            ftj("team-a", "done", "model://m", "Succeeded"),
            ftj("team-a", "more", "model://m", "Running"),
            ftj("team-a", "new", "model://m", None),
            ftj("team-a", "other", "model://n", "Pending"),
            ftj("team-a", "fresh", "microsoft/Phi-3-mini-4k-instruct", "Running"),
            ftj("team-b", "more", "model://m", "Running"),
            ftj("team-c", "unwatched", "model://m", "Running"),
        ]
    )
    view = asyncio.run(Children.load(listing, ["team-a", "team-b"]))  # type: ignore[arg-type]
    assert view.finished == {("team-a", "done")}
    assert view.trains_from("team-a", "m") == ["more", "new"]
    assert view.trains_from("team-a", "n") == ["other"]
    assert view.trains_from("team-b", "m") == ["more"]
    assert view.trains_from("team-c", "m") == []


def test_a_job_continuing_from_a_model_is_kept_until_it_ends_or_goes():
    view = Children()
    more, other = ("team-a", "more"), ("team-a", "other")
    assert view.saw_trainer(more, "model://m", None) is None
    assert view.saw_trainer(more, "model://m", "Running") is None
    assert view.saw_trainer(other, "microsoft/Phi-3-mini-4k-instruct", "Running") is None
    assert view.trains_from("team-a", "m") == ["more"]
    assert view.saw_trainer(more, "model://m", "Succeeded") == "m"  # it ended: re-check m
    assert view.saw_trainer(more, "model://m", "Succeeded") is None  # a later event
    assert view.trains_from("team-a", "m") == []
    view.saw_trainer(more, "model://m", "Running")
    assert view.saw_trainer(more, "model://m", "Running", deleted=True) == "m"
    assert view.trainers == {}
