"""A local job's references, checked before its training Job exists (reconcile/inputs.py):
dataset ConfigMaps wait a bounded time then fail naming the field; a model:// base waits
while the model is missing and fails at once when it cannot be continued from."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kubetune.api.finetunedmodel import FineTunedModelSpec
from kubetune.api.finetunejob import FineTuneJobSpec, FineTuneJobStatus
from kubetune.conditions import find_condition
from kubetune.reconcile.inputs import (
    INPUTS_READY,
    Resolution,
    Resolved,
    Unusable,
    Waiting,
    age_seconds,
    inputs_status,
    referenced_config_maps,
    referenced_model,
    resolve_inputs,
)

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
PHI3 = "microsoft/Phi-3-mini-4k-instruct"
DATA = {"train.jsonl", "val.jsonl"}
MODEL_SPEC = {
    "baseModel": PHI3,
    "source": {"pvc": {"claimName": "kubetune-models", "path": "adapters/v1"}},
    "sourceJob": "v1",
}


def make_spec(**fields: Any) -> FineTuneJobSpec:
    spec: dict[str, Any] = {
        "baseModel": PHI3,
        "dataset": {"training": {"configMap": {"name": "data", "key": "train.jsonl"}}},
    }
    return FineTuneJobSpec.model_validate({**spec, **fields})


def make_model(phase: str | None = "Ready", deleting: bool = False, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "v1"}
    if deleting:
        metadata["deletionTimestamp"] = "2025-01-01T11:00:00Z"
    return {
        "metadata": metadata,
        "spec": {**MODEL_SPEC, **spec},
        "status": {"phase": phase} if phase else {},
    }


def resolve(
    spec: FineTuneJobSpec,
    *,
    config_maps: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    age: float = 0,
    name: str = "v2",
) -> Resolution:
    return resolve_inputs(
        spec,
        name=name,
        namespace="team-a",
        config_maps={"data": DATA} if config_maps is None else config_maps,
        model=model,
        age=age,
        timeout=300,
    )


def test_plain_base_model_resolves_to_itself():
    assert resolve(make_spec()) == Resolved(base_model=PHI3)


def test_model_reference_resolves_to_the_models_base_and_adapter():
    got = resolve(make_spec(baseModel="model://v1"), model=make_model())
    assert got == Resolved(base_model=PHI3, model=FineTunedModelSpec.model_validate(MODEL_SPEC))


def test_in_use_model_can_be_continued_from():
    assert isinstance(
        resolve(make_spec(baseModel="model://v1"), model=make_model("InUse")), Resolved
    )


def test_referenced_names():
    spec = make_spec(
        baseModel="model://v1",
        dataset={
            "training": {"configMap": {"name": "data", "key": "train.jsonl"}},
            "validation": {"configMap": {"name": "other", "key": "val.jsonl"}},
        },
    )
    assert referenced_model(spec) == "v1"
    assert referenced_model(make_spec()) is None
    assert referenced_config_maps(spec) == {
        "spec.dataset.training": ("data", "train.jsonl"),
        "spec.dataset.validation": ("other", "val.jsonl"),
    }
    url = make_spec(dataset={"training": {"url": "https://example.invalid/t.jsonl"}})
    assert referenced_config_maps(url) == {}


@pytest.mark.parametrize(
    ("dataset", "config_maps", "field", "problem"),
    [
        pytest.param(
            {"training": {"configMap": {"name": "data", "key": "train.jsonl"}}},
            {"data": None},
            "spec.dataset.training",
            "ConfigMap data does not exist in namespace team-a",
            id="training-configmap-missing",
        ),
        pytest.param(
            {"training": {"configMap": {"name": "data", "key": "train.jsonl"}}},
            {"data": {"other.jsonl"}},
            "spec.dataset.training",
            "ConfigMap data has no key train.jsonl (keys: other.jsonl)",
            id="training-key-missing",
        ),
        pytest.param(
            {"training": {"configMap": {"name": "data", "key": "train.jsonl"}}},
            {"data": set()},
            "spec.dataset.training",
            "ConfigMap data has no key train.jsonl (keys: none)",
            id="empty-configmap",
        ),
        pytest.param(
            {
                "training": {"configMap": {"name": "data", "key": "train.jsonl"}},
                "validation": {"configMap": {"name": "held-out", "key": "val.jsonl"}},
            },
            {"data": DATA, "held-out": None},
            "spec.dataset.validation",
            "ConfigMap held-out does not exist in namespace team-a",
            id="validation-configmap-missing",
        ),
    ],
)
def test_missing_dataset_waits_then_fails_naming_the_field(dataset, config_maps, field, problem):
    spec = make_spec(dataset=dataset)
    waiting = resolve(spec, config_maps=config_maps, age=10)
    assert isinstance(waiting, Waiting), waiting
    assert waiting.reason == "DatasetNotFound"
    assert waiting.message.startswith(f"{field}: {problem}"), waiting.message
    assert "waiting up to 290s more" in waiting.message
    assert 1 <= waiting.retry_after <= 5
    failed = resolve(spec, config_maps=config_maps, age=300)
    assert failed == Unusable("DatasetNotFound", f"{field}: {problem} (waited 300s)")


def test_retry_never_outlasts_the_deadline():
    waiting = resolve(make_spec(), config_maps={"data": None}, age=298.5)
    assert isinstance(waiting, Waiting)
    assert waiting.retry_after == 1.5


@pytest.mark.parametrize(
    ("fields", "name", "why"),
    [
        pytest.param({"baseModel": "model://v2"}, "v2", "the job name", id="default-name"),
        pytest.param(
            {"baseModel": "model://mine", "model": "mine"}, "v2", "spec.model", id="spec-model"
        ),
    ],
)
def test_own_output_model_fails_naming_base_model(fields, name, why):
    got = resolve(make_spec(**fields), name=name, model=make_model())
    assert isinstance(got, Unusable), got
    assert got.reason == "InvalidSpec"
    assert got.message.startswith(f"spec.baseModel: {fields['baseModel']} is this job's own")
    assert why in got.message


def test_other_job_name_is_no_cycle():
    # spec.model renames the output: continuing from a model named like the job is fine.
    got = resolve(make_spec(baseModel="model://v1", model="v2"), name="v1", model=make_model())
    assert isinstance(got, Unusable)
    # ...unless that model was produced by this very job (its adapter is our output).
    assert got.message == "spec.baseModel: FineTunedModel v1 is this job's own output"
    other = make_model(sourceJob="someone-else")
    assert isinstance(
        resolve(make_spec(baseModel="model://v1", model="v2"), name="v1", model=other), Resolved
    )


@pytest.mark.parametrize(
    ("model", "reason", "message"),
    [
        pytest.param(
            None,
            "BaseModelNotFound",
            "spec.baseModel: FineTunedModel v1 does not exist yet; waiting for it",
            id="missing",
        ),
        pytest.param(
            make_model(phase=None),
            "BaseModelNotReady",
            "spec.baseModel: FineTunedModel v1 is not accepted yet; waiting for it to be Ready",
            id="not-accepted",
        ),
    ],
)
def test_missing_model_waits_without_deadline(model, reason, message):
    got = resolve(make_spec(baseModel="model://v1"), model=model, age=10**6)
    assert got == Waiting(reason, message, 10.0)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        pytest.param(
            make_model(deleting=True),
            "spec.baseModel: FineTunedModel v1 is being deleted",
            id="deleting",
        ),
        pytest.param(
            make_model(source={"azureModelId": "azureml://locations/x/models/m/versions/1"}),
            "spec.baseModel: FineTunedModel v1 is an Azure model (source.azureModelId); "
            "backend local continues from an adapter on a PVC only",
            id="azure-model",
        ),
        pytest.param(
            make_model(baseModel="model://v0"),
            "spec.baseModel: FineTunedModel v1 has baseModel model://v0, not a base model",
            id="model-of-a-model",
        ),
        pytest.param(
            make_model(source={"pvc": {"path": "no-claim"}}),
            "spec.baseModel: FineTunedModel v1 has an invalid spec: ",
            id="invalid-model",
        ),
    ],
)
def test_unusable_model_fails_naming_base_model(model, message):
    got = resolve(make_spec(baseModel="model://v1"), model=model)
    assert isinstance(got, Unusable), got
    assert got.reason == "BaseModelUnusable"
    assert got.message.startswith(message), got.message


def test_missing_dataset_is_reported_before_the_model():
    got = resolve(make_spec(baseModel="model://v1"), config_maps={"data": None}, model=None)
    assert isinstance(got, Waiting)
    assert got.message.startswith("spec.dataset.training: ")


def test_inputs_status_records_the_condition_and_the_resolved_base():
    waiting = Waiting("BaseModelNotFound", "spec.baseModel: FineTunedModel v1 does not exist", 10)
    status = inputs_status(FineTuneJobStatus(phase="Pending"), waiting, generation=2, now=NOW)
    cond = find_condition(status.conditions, INPUTS_READY)
    assert cond is not None
    assert (cond.status, cond.reason, cond.message, cond.observed_generation) == (
        "False",
        "BaseModelNotFound",
        waiting.message,
        2,
    )
    assert status.resolved_base_model is None
    assert status.phase == "Pending"
    ready = inputs_status(status, Resolved(base_model=PHI3), generation=2, now=NOW)
    cond = find_condition(ready.conditions, INPUTS_READY)
    assert cond is not None
    assert (cond.status, cond.reason) == ("True", "Resolved")
    assert ready.resolved_base_model == PHI3


def test_age_seconds():
    assert age_seconds("2025-01-01T11:59:00Z", NOW) == 60
    assert age_seconds(None, NOW) == 0
    assert age_seconds("2025-01-01T12:01:00Z", NOW) == 0  # clock skew: never negative
