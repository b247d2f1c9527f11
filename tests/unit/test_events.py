"""Events (events.py): what an Event says about its object, and that none is lost
silently when no operator runs."""

from __future__ import annotations

import pytest

from kubetune import events

MODEL = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "FineTunedModel",
    "metadata": {"name": "xbox", "namespace": "team-a", "uid": "u-1"},
}


def test_an_event_names_its_object_and_says_who_posted_it():
    body = events.event_body(MODEL, "Warning", "DeletionBlocked", "in use by chat")
    assert body["involvedObject"] == {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTunedModel",
        "name": "xbox",
        "namespace": "team-a",
        "uid": "u-1",
    }
    assert body["metadata"] == {"namespace": "team-a", "generateName": "xbox."}
    assert (body["type"], body["reason"], body["message"]) == (
        "Warning",
        "DeletionBlocked",
        "in use by chat",
    )
    assert body["source"] == {"component": "kubetune"}
    assert body["firstTimestamp"].endswith("Z")
    assert len(body["firstTimestamp"]) == len("2026-11-25T04:43:28Z")


def test_a_long_message_keeps_its_start_and_end_within_the_limit():
    message = "start " + "x" * 5000 + " end"
    cut = events.event_body(MODEL, "Normal", "Completed", message)["message"]
    assert len(cut) <= events.MAX_MESSAGE
    assert cut.startswith("start ")
    assert cut.endswith(" end")
    assert "..." in cut


def test_posting_without_a_running_operator_is_an_error():
    with pytest.raises(RuntimeError, match="Completed"):
        events.info(MODEL, reason="Completed", message="done")
