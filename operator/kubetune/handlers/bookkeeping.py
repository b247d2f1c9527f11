"""Kopf's bookkeeping on our objects, written only when there is something to keep.

Kopf records two things on each object it handles. Its stock storages cost API
writes on every object, which the scale benchmark counts (docs/performance.md):

- **What was handled** (the diff base): Kopf compares an object with it to decide
  whether create/update handlers are due. The stock storages keep the last handled
  spec, labels and annotations in an annotation: a write per handled change, and a
  deep copy of every object on every watch event. Our handlers act on the spec
  alone (a label or annotation change does not bump the generation and triggers
  nothing, as in controllers built on controller-runtime's
  GenerationChangedPredicate), and each records the generation it acted on in
  status.observedGeneration. `ObservedGeneration` takes the spec, uncopied, as the
  diff base, and counts an object as handled when status.observedGeneration equals
  its generation and no handler of it has unfinished progress (a retry that is
  due); otherwise the handlers run, for a first create and a later spec change
  alike (they are one function for both). Storing it writes nothing.
- **Handler progress** (retries, for handlers that failed temporarily), in
  annotations. `ProgressAnnotations` is Kopf's annotation storage without the
  `<prefix>/kopf-managed` marker on objects whose handlers all succeeded at once:
  Kopf adds the marker with the first progress record, even one it purges in the
  same patch, which made a metadata patch of every object its only change. It also
  skips Kopf's deep copy of the diff base on every event (4% of the operator's CPU
  in the scale benchmark's profile): that base is `ObservedGeneration`'s, the spec
  alone, with no annotations to clear.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, cast

import kopf

MARKER = "kopf-managed"


class ProgressAnnotations(kopf.AnnotationsProgressStorage):
    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        """Kopf's progress out of a diff base: ours (ObservedGeneration) holds none."""
        return essence

    def purge(self, *, key: kopf.HandlerId, body: kopf.Body, patch: kopf.Patch) -> None:
        super().purge(key=key, body=body, patch=patch)
        marker = f"{self.prefix}/{MARKER}"
        metadata = patch.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        ours = [k for k in annotations if k.startswith(f"{self.prefix}/")]
        if ours == [marker] and marker not in body.metadata.annotations:
            del annotations[marker]  # nothing left to mark
        # Emptied stanzas would still be sent, as a patch that changes nothing.
        if "annotations" in metadata and not annotations:
            del metadata["annotations"]
        if "metadata" in patch and not metadata:
            del patch["metadata"]


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
