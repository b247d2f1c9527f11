from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kubetune.api.finetunejob import FineTuneJobPhase, FineTuneJobSpec, FineTuneJobStatus
from kubetune.conditions import find_condition
from kubetune.errors import InvalidSpec
from kubetune.reconcile.acceptance import next_status, parse_spec

T0 = datetime(2026, 1, 1, tzinfo=UTC)
VALID = {
    "baseModel": "microsoft/Phi-3-mini-4k-instruct",
    "dataset": {"training": {"configMap": {"name": "d", "key": "train.jsonl"}}},
}


def accept(old: FineTuneJobStatus, problem: str | None = None, *, gen: int = 1, now=T0):
    return next_status(
        old,
        problem=problem,
        generation=gen,
        now=now,
        first_phase="Pending",
        rejected_phase="Failed",
    )


def test_valid_spec_sets_first_phase_and_accepted():
    new = accept(FineTuneJobStatus())
    assert new.phase is FineTuneJobPhase.PENDING
    assert new.model_dump(mode="json", by_alias=True, exclude_none=True)["phase"] == "Pending"
    assert new.observed_generation == 1
    cond = find_condition(new.conditions, "Accepted")
    assert cond is not None
    assert (cond.status, cond.reason, cond.observed_generation) == ("True", "Accepted", 1)
    assert cond.last_transition_time == T0


def test_phase_further_along_is_kept():
    assert accept(FineTuneJobStatus(phase="Running")).phase == "Running"


def test_invalid_spec_fails_with_the_problem():
    new = accept(FineTuneJobStatus(), "spec.dataset: Field required")
    cond = find_condition(new.conditions, "Accepted")
    assert new.phase == "Failed"
    assert cond is not None
    assert (cond.status, cond.reason, cond.message) == (
        "False",
        "InvalidSpec",
        "spec.dataset: Field required",
    )


def test_transition_time_changes_only_when_status_flips():
    first = accept(FineTuneJobStatus())
    later = T0 + timedelta(minutes=5)
    again = accept(first, gen=2, now=later)
    cond = find_condition(again.conditions, "Accepted")
    assert cond is not None
    assert cond.last_transition_time == T0
    assert cond.observed_generation == 2
    flipped = accept(again, "bad", gen=3, now=later)
    cond = find_condition(flipped.conditions, "Accepted")
    assert cond is not None
    assert cond.last_transition_time == later
    assert len(flipped.conditions) == 1


def test_parse_spec_applies_defaults():
    spec = parse_spec(FineTuneJobSpec, VALID)
    assert (spec.backend, spec.lora.r, spec.hyperparameters.epochs, spec.quantization) == (
        "local",
        16,
        3,
        "none",
    )


def test_parse_spec_names_every_problem():
    with pytest.raises(InvalidSpec) as e:
        parse_spec(FineTuneJobSpec, {"baseModel": "", "lora": {"r": 0}})
    message = str(e.value)
    for problem in ("spec.baseModel", "spec.dataset", "spec.lora.r"):
        assert problem in message


def test_status_with_unknown_fields_still_parses():
    status = FineTuneJobStatus.model_validate({"phase": "Running", "fromAnotherVersion": 1})
    assert status.phase == "Running"
