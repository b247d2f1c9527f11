"""The training Jobs and pods of each unfinished FineTuneJob, as the watches last
showed them (informer.py; slimmed to what the status logic reads), which
FineTuneJobs are finished, and which unfinished ones continue from a FineTunedModel
(whose deletion they hold up: handlers/finetunedmodel.py).

Kopf indices would hold the same, but Kopf holds every handler back until each
object of an indexed resource's first listing is indexed, and wakes every waiting
worker once per such object: a restart with N jobs present cost O(N²) (17 s at
1,000 jobs; docs/performance.md). This view keeps nothing for finished jobs (the
events of their Jobs and pods are dropped as they are read), and knows the finished
ones from the start: the operator lists the FineTuneJobs once, in pages, before any
handler runs (`load`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubetune.api.common import API_VERSION
from kubetune.api.kinds import FINETUNEJOB
from kubetune.backends.local.manifests import FINETUNEJOB_LABEL
from kubetune.k8s import Kube, Obj, path
from kubetune.reconcile.finetunejob import TERMINAL, read_parts
from kubetune.reconcile.inputs import model_reference

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
        "status": read_parts(body.get("status") or {}),
    }


@dataclass
class Children:
    jobs: dict[Key, Obj] = field(default_factory=dict)
    pods: dict[Key, dict[str, Obj]] = field(default_factory=dict)
    finished: set[Key] = field(default_factory=set)
    trainers: dict[Key, str] = field(default_factory=dict)
    """Unfinished FineTuneJobs with `baseModel: model://<name>`: the model's name."""

    @classmethod
    async def load(cls, kube: Kube, namespaces: Iterable[str]) -> Children:
        """Which FineTuneJobs are finished, and which continue from a model, from one
        paged list per watched namespace (one for the cluster when `namespaces` is
        empty)."""
        view = cls()
        for namespace in tuple(namespaces) or (None,):
            url = path(API_VERSION, FINETUNEJOB.plural, namespace)
            async for obj in kube.iter_items(url):
                meta = obj["metadata"]
                key = (meta["namespace"], meta["name"])
                phase = (obj.get("status") or {}).get("phase")
                if phase in TERMINAL:
                    view.finished.add(key)
                view.saw_trainer(key, (obj.get("spec") or {}).get("baseModel"), phase)
        return view

    def saw_trainer(
        self, key: Key, base_model: str | None, phase: str | None, *, deleted: bool = False
    ) -> str | None:
        """A FineTuneJob as listed or as an event showed it: kept while it continues
        from a model and has not finished; returns the model of one that was kept and
        has now finished or gone."""
        model = model_reference(base_model or "")
        if model is not None and not deleted and phase not in TERMINAL:
            self.trainers[key] = model
            return None
        return self.trainers.pop(key, None)

    def trains_from(self, namespace: str, model: str) -> list[str]:
        """The unfinished FineTuneJobs that continue from this model."""
        return sorted(n for (ns, n), m in self.trainers.items() if (ns, m) == (namespace, model))

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

    def saw(self, plural: str, event: str, obj: Obj) -> Key:
        """A training Job's or pod's event (plural "jobs" or "pods"); its job's key."""
        meta = obj["metadata"]
        key = (meta["namespace"], meta["labels"][FINETUNEJOB_LABEL])
        saw = self.saw_job if plural == "jobs" else self.saw_pod
        saw(key, obj, deleted=event == "DELETED")
        return key

    def listed(self, plural: str, namespace: str | None, names: set[tuple[str, str]]) -> set[Key]:
        """A complete list of one namespace's (None: every namespace's) training Jobs
        or pods returned `names`: drop the others, deleted unseen; their jobs' keys."""
        held = (
            ((key, job["metadata"]["name"]) for key, job in self.jobs.items())
            if plural == "jobs"
            else ((key, pod) for key, pods in self.pods.items() for pod in pods)
        )
        gone = [
            (key, name)
            for key, name in held
            if namespace in (None, key[0]) and (key[0], name) not in names
        ]
        for key, name in gone:
            if plural == "jobs":
                self.jobs.pop(key, None)
            else:
                self.saw_pod(key, {"metadata": {"name": name}}, deleted=True)
        return {key for key, _ in gone}

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
