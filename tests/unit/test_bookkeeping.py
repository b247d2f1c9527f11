"""Kopf's bookkeeping (handlers/bookkeeping.py): when create/update handlers are due
(status.observedGeneration, pending retries), and that a clean success writes nothing."""

from __future__ import annotations

import json

import kopf
import pytest

from kubetune.api.common import GROUP
from kubetune.handlers.bookkeeping import ObservedGeneration, ProgressAnnotations
from kubetune.handlers.operator import CHANGE_HANDLERS, build_registry
from kubetune.settings import RunOptions


def storage() -> ObservedGeneration:
    return ObservedGeneration(kopf.AnnotationsProgressStorage(prefix=GROUP), CHANGE_HANDLERS)


def body(generation: int, observed: int | None, annotations: dict | None = None) -> kopf.Body:
    raw = {
        "metadata": {"name": "x", "generation": generation, "annotations": annotations or {}},
        "spec": {"epochs": 3},
        "status": {} if observed is None else {"observedGeneration": observed},
    }
    return kopf.Body(raw)


def test_handled_when_the_status_observed_the_generation():
    handled = body(2, 2, {f"{GROUP}/force-delete": "true", "note": "not json"})
    assert storage().fetch(body=handled) == {"spec": {"epochs": 3}}


@pytest.mark.parametrize("observed", [None, 1])
def test_new_or_changed_specs_are_not_handled(observed):
    assert storage().fetch(body=body(2, observed)) is None


def test_a_due_retry_keeps_the_object_unhandled():
    record = {"started": "2026-11-25T00:00:00", "retries": 1, "delayed": "2026-11-25T00:00:10"}
    retrying = body(1, 1, {f"{GROUP}/reconcile": json.dumps(record)})
    assert storage().fetch(body=retrying) is None


def test_fields_outside_the_spec_cannot_be_watched():
    assert storage().build(body=body(1, 1), extra_fields=[("spec",)]) == {"spec": {"epochs": 3}}
    with pytest.raises(TypeError, match="status"):
        storage().build(body=body(1, 1), extra_fields=[("status", "phase")])


def test_the_diff_base_is_cleared_without_a_copy():
    """Kopf clears its progress out of the old and new diff bases on every event; ours
    hold none, and deep-copying them cost 4% of the CPU (docs/performance.md)."""
    progress = ProgressAnnotations(prefix=GROUP)
    essence = ObservedGeneration(progress, CHANGE_HANDLERS).build(body=body(1, 1))
    assert progress.clear(essence=essence) is essence
    assert essence == {"spec": {"epochs": 3}}


def test_storing_writes_nothing():
    patch = kopf.Patch()
    storage().store(body=body(1, 1), patch=patch, essence=storage().build(body=body(1, 1)))
    assert not patch


def test_every_create_or_update_handler_is_listed():
    registry = build_registry(RunOptions())
    changing = {
        h.id
        for h in registry._changing.get_all_handlers()
        if h.reason in (None, kopf.Reason.CREATE, kopf.Reason.UPDATE, kopf.Reason.RESUME)
    }
    assert changing == set(CHANGE_HANDLERS)


def progress_patch(*records: dict, purge: bool, marked: bool = False) -> kopf.Patch:
    storage = ProgressAnnotations(prefix=GROUP)
    annotations = {f"{GROUP}/kopf-managed": "yes"} if marked else {}
    body = kopf.Body({"metadata": {"name": "x", "annotations": annotations}})
    patch = kopf.Patch()
    for i, record in enumerate(records):
        storage.store(key=kopf.HandlerId(f"h{i}"), record=record, body=body, patch=patch)
    if purge:
        storage.purge(key=kopf.HandlerId("h0"), body=body, patch=patch)
    return patch


@pytest.mark.parametrize("marked", [False, True])
def test_handlers_that_succeed_at_once_leave_nothing_to_write(marked):
    assert not progress_patch({"started": "t", "success": True}, purge=True, marked=marked)


def test_a_retry_is_recorded_with_the_marker():
    patch = progress_patch({"started": "t", "retries": 1}, purge=False)
    assert set(patch["metadata"]["annotations"]) == {f"{GROUP}/h0", f"{GROUP}/kopf-managed"}


def test_the_marker_stays_while_another_handler_retries():
    retrying = {"started": "t", "retries": 1}
    patch = progress_patch({"started": "t", "success": True}, retrying, purge=True)
    assert set(patch["metadata"]["annotations"]) == {f"{GROUP}/h1", f"{GROUP}/kopf-managed"}
