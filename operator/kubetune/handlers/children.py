"""The training Jobs and pods of each unfinished FineTuneJob, as the watches last
showed them, and which FineTuneJobs are finished.

Kopf indices would hold the same, but Kopf holds every handler back until each
object of an indexed resource's first listing is indexed, and wakes every waiting
worker once per such object: a restart with N jobs present cost O(N²) (17 s at
1,000 jobs; docs/performance.md). This view is filled by the jobs' and pods' event
handlers instead, keeps nothing for finished jobs (the events of their Jobs and pods
are skipped without a read), and knows the finished ones from the start: the
operator lists the FineTuneJobs once, in pages, before any handler runs (`load`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubetune.api.common import API_VERSION
from kubetune.api.kinds import FINETUNEJOB
from kubetune.k8s import Kube, Obj, path
from kubetune.reconcile.finetunejob import TERMINAL

Key = tuple[str, str]


def slim(body: Any) -> Obj:
    """What the status logic reads of a Job or pod."""
    meta = body["metadata"]
    spec = body.get("spec") or {}
    return {
        "metadata": {
            "name": meta["name"],
            "uid": meta.get("uid"),
            "creationTimestamp": meta.get("creationTimestamp"),
            "deletionTimestamp": meta.get("deletionTimestamp"),
            "ownerReferences": list(meta.get("ownerReferences") or []),
        },
        "spec": {k: spec[k] for k in ("suspend", "nodeName") if k in spec},
        "status": dict(body.get("status") or {}),
    }


@dataclass
class Children:
    jobs: dict[Key, Obj] = field(default_factory=dict)
    pods: dict[Key, dict[str, Obj]] = field(default_factory=dict)
    finished: set[Key] = field(default_factory=set)

    @classmethod
    async def load(cls, kube: Kube, namespaces: Iterable[str]) -> Children:
        """Which FineTuneJobs are finished, from one paged list per watched namespace
        (one for the cluster when `namespaces` is empty)."""
        view = cls()
        for namespace in tuple(namespaces) or (None,):
            url = path(API_VERSION, FINETUNEJOB.plural, namespace)
            async for obj in kube.iter_items(url):
                if (obj.get("status") or {}).get("phase") in TERMINAL:
                    meta = obj["metadata"]
                    view.finished.add((meta["namespace"], meta["name"]))
        return view

    def saw_job(self, key: Key, body: Any, *, deleted: bool) -> None:
        if deleted:
            self.jobs.pop(key, None)
        elif key not in self.finished:
            self.jobs[key] = slim(body)

    def saw_pod(self, key: Key, body: Any, *, deleted: bool) -> None:
        name = body["metadata"]["name"]
        pods = self.pods.get(key, {})
        if deleted:
            pods.pop(name, None)
        elif key not in self.finished:
            pods[name] = slim(body)
            self.pods[key] = pods
        if not pods:
            self.pods.pop(key, None)

    def job(self, key: Key) -> Obj | None:
        return self.jobs.get(key)

    def pods_of(self, key: Key) -> list[Obj]:
        return list(self.pods.get(key, {}).values())

    def finish(self, key: Key) -> None:
        """The FineTuneJob is finished: nothing of its children is needed any more."""
        self.finished.add(key)
        self.jobs.pop(key, None)
        self.pods.pop(key, None)

    def forget(self, key: Key) -> None:
        """The FineTuneJob is gone."""
        self.finish(key)
        self.finished.discard(key)
