"""What Kopf treats as "already handled": the generation our status says we acted on.

Kopf decides whether an object needs its create/update handlers by comparing it
with a diff base. Its stock storages keep the last handled spec, labels and
annotations in an annotation: one more write per handled change (two per job
lifecycle: the FineTuneJob's and its model's), and a deep copy of every object on
every watch event. Our handlers act on the spec alone (a label or annotation
change does not bump the generation and triggers nothing, as in controllers built
on controller-runtime's GenerationChangedPredicate), and each of them records the
generation it acted on in status.observedGeneration. So:

- the diff base of an object is its spec, not copied;
- an object counts as handled when status.observedGeneration equals its
  generation and Kopf holds no unfinished progress for one of its handlers (a
  retry that is due). Otherwise it counts as new: the handlers run, for a first
  create and a later spec change alike (they are one function for both);
- storing the diff base writes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, cast

import kopf


class ObservedGeneration(kopf.DiffBaseStorage):
    def __init__(self, progress: kopf.ProgressStorage, handlers: Collection[str]) -> None:
        """`handlers`: the ids of the create/update/resume handlers whose unfinished
        progress (in `progress`) keeps an object unhandled."""
        super().__init__()
        self.progress = progress
        self.handlers = [kopf.HandlerId(h) for h in handlers]

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        outside = [f for f in extra_fields or () if tuple(f)[:1] != ("spec",)]
        if outside:
            raise TypeError(f"handlers must watch the spec only, not {outside}")
        return cast(kopf.BodyEssence, {"spec": body.get("spec") or {}})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        generation = body.get("metadata", {}).get("generation")
        if (body.get("status") or {}).get("observedGeneration") != generation:
            return None
        if any(self.progress.fetch(key=h, body=body) for h in self.handlers):
            return None  # a handler is still retrying: let it run
        return self.build(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        """Nothing to write: the handlers wrote status.observedGeneration."""
