"""The Foundry backend's pure parts: Azure states as phases, hyper-parameter mapping,
endpoint status and drift, names derived for Azure, and data staging."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kubetune.api.finetunejob import FineTuneJobPhase, FineTuneJobStatus, Hyperparameters
from kubetune.api.modeldeployment import FoundryEndpointStatus, ModelDeploymentStatus
from kubetune.backends.foundry import EndpointInfo, JobInfo, endpoint_name, model_version_of
from kubetune.backends.foundry.datasets import InvalidData, stage
from kubetune.reconcile.foundry import (
    AZURE_PHASES,
    endpoint_status,
    foundry_hyperparameters,
    observe_azure_job,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
READY_MODEL = {"metadata": {"name": "xbox"}, "status": {"phase": "Ready"}}
ROW = {
    "messages": [
        {"role": "user", "content": "How do I pair a controller?"},
        {"role": "assistant", "content": "Hold the pair button."},
    ]
}


@pytest.mark.parametrize(
    ("azure", "phase", "reason"),
    [
        ("NotStarted", FineTuneJobPhase.QUEUED, "NotStarted"),
        ("Preparing", FineTuneJobPhase.QUEUED, "Preparing"),
        ("Running", FineTuneJobPhase.RUNNING, "Running"),
        ("CancelRequested", FineTuneJobPhase.RUNNING, "Cancelling"),
        ("Completed", FineTuneJobPhase.SUCCEEDED, "AzureJobCompleted"),
        ("Failed", FineTuneJobPhase.FAILED, "AzureJobFailed"),
        ("NotResponding", FineTuneJobPhase.FAILED, "AzureJobFailed"),
        ("Canceled", FineTuneJobPhase.CANCELLED, "AzureJobCanceled"),
    ],
)
def test_azure_states_map_to_phases(azure: str, phase: FineTuneJobPhase, reason: str) -> None:
    seen = observe_azure_job(JobInfo("j", azure, error="bad line 3"), FineTuneJobStatus())
    assert (seen.phase, seen.reason) == (phase, reason)
    if phase is FineTuneJobPhase.FAILED:
        assert "bad line 3" in seen.message


def test_unknown_azure_state_keeps_the_phase() -> None:
    old = FineTuneJobStatus(phase=FineTuneJobPhase.RUNNING)
    assert "Unknown" not in AZURE_PHASES
    assert observe_azure_job(JobInfo("j", "Unknown"), old).phase is FineTuneJobPhase.RUNNING


@pytest.mark.parametrize(
    ("fields", "want"),
    [
        ({}, {"n_epochs": "3"}),
        (
            {"epochs": 2, "learning_rate_multiplier": 0.5, "batch_size_multiplier": 4},
            {"n_epochs": "2", "learning_rate_multiplier": "0.5", "batch_size": "4"},
        ),
        ({"batch_size_multiplier": 0.2}, {"n_epochs": "3", "batch_size": "1"}),
        ({"batch_size": 16}, {"n_epochs": "3", "batch_size": "16"}),
        (
            {"extra": {"n_epochs": "5", "lora_rank": "32"}},
            {"n_epochs": "5", "lora_rank": "32"},
        ),
    ],
)
def test_hyperparameters_under_foundrys_names(fields: dict, want: dict[str, str]) -> None:
    assert foundry_hyperparameters(Hyperparameters(**fields)) == want


def _endpoint(state: str) -> EndpointInfo:
    return EndpointInfo("ep", "azureml://m", state, "https://ep.example", "/id")


def _status(**kw: object) -> ModelDeploymentStatus:
    base = {
        "model": READY_MODEL,
        "model_name": "xbox",
        "endpoint_name": "ep",
        "key_secret": None,
        "generation": 1,
        "now": NOW,
    }
    old = ModelDeploymentStatus(phase="Deploying")  # type: ignore[arg-type]
    return endpoint_status(old, **{**base, **kw})  # type: ignore[arg-type]


def test_endpoint_provisioning_then_ready_with_its_key_secret() -> None:
    creating = _status(endpoint=_endpoint("Creating"))
    assert creating.phase == "Deploying"
    assert creating.endpoint is None
    ready = _status(endpoint=_endpoint("Succeeded"), key_secret="ep-key")
    assert ready.phase == "Ready"
    assert ready.endpoint == "https://ep.example"
    assert ready.foundry == FoundryEndpointStatus(
        endpoint_name="ep", provisioning_state="Succeeded", key_secret="ep-key"
    )


def test_endpoint_is_not_ready_before_its_key_is_stored() -> None:
    assert _status(endpoint=_endpoint("Succeeded")).phase == "Deploying"


def test_waits_for_the_model() -> None:
    waiting = _status(model=None, endpoint=None)
    assert waiting.phase == "WaitingForModel"


def test_endpoint_removed_by_azure_is_drift() -> None:
    ready = _status(endpoint=_endpoint("Succeeded"), key_secret="ep-key")
    gone = endpoint_status(
        ready,
        model=READY_MODEL,
        model_name="xbox",
        endpoint_name="ep",
        endpoint=None,
        key_secret=None,
        generation=1,
        now=NOW,
    )
    assert gone.phase == "Failed"
    assert gone.endpoint is None
    assert gone.foundry is not None
    assert gone.foundry.provisioning_state == "Missing"
    (available,) = [c for c in gone.conditions if c.type == "Available"]
    assert available.reason == "EndpointMissing"


def test_failed_provisioning() -> None:
    assert _status(endpoint=_endpoint("Failed")).phase == "Failed"


@pytest.mark.parametrize(
    "name", ["xbox", "a" * 253, "9-lives", "with.dots.in.it", "UPPER-case", "-"]
)
def test_endpoint_names_follow_azures_rules(name: str) -> None:
    derived = endpoint_name("team-a", name)
    assert re.fullmatch(r"[a-z][a-z0-9-]{2,31}", derived), derived
    assert derived != endpoint_name("team-b", name)  # unique per namespace


def test_model_version_of() -> None:
    assert model_version_of("azureml://locations/eastus2/workspaces/w/models/xbox/versions/3") == (
        "xbox",
        "3",
    )
    assert model_version_of("azureml://registries/azureml/models/Phi") is None


def test_staging_splits_and_keeps_stable_names(tmp_path: Path) -> None:
    data = "".join(json.dumps({**ROW, "id": i}) + "\n" for i in range(20)).encode()
    staged = stage(data, None, names=("t", "v"), split=0.25, seed=7, directory=tmp_path / "a")
    assert staged.examples == (15, 5)
    assert (staged.training.name, staged.validation.name) == ("training.jsonl", "validation.jsonl")
    again = stage(data, None, names=("t", "v"), split=0.25, seed=7, directory=tmp_path / "b")
    assert again.training.read_bytes() == staged.training.read_bytes()


def test_staging_reports_every_problem_with_file_and_line(tmp_path: Path) -> None:
    good = "".join(json.dumps({**ROW, "id": i}) + "\n" for i in range(10))
    bad = good + '{"messages": []}\nnot json\n'
    with pytest.raises(InvalidData) as raised:
        stage(
            bad.encode(),
            b"",
            names=("train.jsonl", "valid.jsonl"),
            split=None,
            seed=None,
            directory=tmp_path,
        )
    message = str(raised.value)
    assert "train.jsonl line 11:" in message
    assert "train.jsonl line 12:" in message
    assert "valid.jsonl: " in message
