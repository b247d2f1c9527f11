"""FineTunedModel and ModelDeployment status (reconcile/finetunedmodel.py,
reconcile/modeldeployment.py) and the status merge patch (handlers/status.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubetune.api.common import Condition, ConditionStatus, StatusBase
from kubetune.api.finetunedmodel import FineTunedModelPhase, FineTunedModelStatus
from kubetune.api.finetunejob import FineTuneJobPhase, FineTuneJobStatus, Progress
from kubetune.api.modeldeployment import ModelDeploymentPhase, ModelDeploymentStatus
from kubetune.conditions import find_condition
from kubetune.handlers.status import status_patch
from kubetune.reconcile.finetunedmodel import BLOCKED, blocked_message, usage_status
from kubetune.reconcile.modeldeployment import serving_state

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
T2 = T0 + timedelta(minutes=30)
NS = "team-a"
ENDPOINT = "http://chat.team-a.svc:8000/v1"
ModelPhase = FineTunedModelPhase
DeployPhase = ModelDeploymentPhase


def ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def cond(
    type_: str, status: str, reason: str, message: str = "", at: datetime = T0, gen: int = 1
) -> Condition:
    return Condition(
        type=type_,
        status=ConditionStatus(status),
        reason=reason,
        message=message,
        last_transition_time=at,
        observed_generation=gen,
    )


# --- FineTunedModel: usage_status -----------------------------------------------------------


def test_blocked_message_names_the_deployments():
    assert blocked_message(["chat", "chat-canary"]) == (
        "delete ModelDeployment chat, chat-canary first: "
        "a model cannot be deleted while it is deployed"
    )


def test_blocked_message_names_the_jobs_training_from_the_model():
    assert blocked_message([], ["more"]) == (
        "FineTuneJob more continues training from it: wait for it to finish, or delete it"
    )
    assert blocked_message(["chat"], ["more", "most"]) == (
        "delete ModelDeployment chat first: a model cannot be deleted while it is deployed; "
        "FineTuneJob more, most continues training from it: wait for it to finish, or delete it"
    )


@pytest.mark.parametrize(
    ("users", "reason"),
    [
        pytest.param([], "TrainingJobsExist", id="jobs-only"),
        pytest.param(["chat"], "DeploymentsExist", id="deployments-and-jobs"),
    ],
)
def test_deleting_while_a_job_trains_from_the_model_is_blocked(users: list[str], reason: str):
    old = FineTunedModelStatus(phase=ModelPhase.READY, observed_generation=2)
    new = usage_status(old, users, deleting=True, now=T1, trainers=["more"])
    assert new.phase is ModelPhase.DELETION_BLOCKED
    assert new.deployments == (users or None)
    assert new.conditions == [
        cond(BLOCKED, "True", reason, blocked_message(users, ["more"]), at=T1, gen=2)
    ]
    done = usage_status(new, [], deleting=True, now=T2)
    assert done.phase is ModelPhase.DELETING
    cleared = find_condition(done.conditions, BLOCKED)
    assert cleared is not None
    assert (cleared.status, cleared.reason) == (ConditionStatus.FALSE, "NotInUse")


def test_a_job_training_from_a_model_does_not_change_its_phase_until_deleted():
    old = FineTunedModelStatus(phase=ModelPhase.READY, observed_generation=1)
    assert usage_status(old, [], deleting=False, now=T0, trainers=["more"]) == old


@pytest.mark.parametrize(
    ("old_phase", "users", "want_phase", "want_deployments"),
    [
        pytest.param(ModelPhase.READY, ["chat"], ModelPhase.IN_USE, ["chat"], id="ready-to-in-use"),
        pytest.param(ModelPhase.IN_USE, [], ModelPhase.READY, None, id="in-use-to-ready"),
        pytest.param(
            ModelPhase.IN_USE, ["a", "b"], ModelPhase.IN_USE, ["a", "b"], id="still-in-use"
        ),
        pytest.param(None, ["chat"], None, ["chat"], id="not-accepted-keeps-no-phase"),
        pytest.param(None, [], None, None, id="not-accepted-unused"),
    ],
)
def test_usage_from_deployments(
    old_phase: FineTunedModelPhase | None,
    users: list[str],
    want_phase: FineTunedModelPhase | None,
    want_deployments: list[str] | None,
):
    old = FineTunedModelStatus(phase=old_phase, observed_generation=1)
    new = usage_status(old, users, deleting=False, now=T0)
    assert (new.phase, new.deployments) == (want_phase, want_deployments)
    assert new.conditions == []


def test_deleting_with_users_is_blocked_with_a_condition():
    old = FineTunedModelStatus(
        phase=ModelPhase.IN_USE,
        observed_generation=3,
        conditions=[cond("Accepted", "True", "Accepted")],
    )
    new = usage_status(old, ["chat", "chat-canary"], deleting=True, now=T1)
    assert new.phase is ModelPhase.DELETION_BLOCKED
    assert new.deployments == ["chat", "chat-canary"]
    assert new.conditions == [
        cond("Accepted", "True", "Accepted"),
        cond(
            BLOCKED,
            "True",
            "DeploymentsExist",
            blocked_message(["chat", "chat-canary"]),
            at=T1,
            gen=3,
        ),
    ]


def test_still_blocked_keeps_the_transition_time_and_updates_the_names():
    old = FineTunedModelStatus(observed_generation=1, phase=ModelPhase.IN_USE)
    first = usage_status(old, ["chat", "chat-canary"], deleting=True, now=T0)
    again = usage_status(first, ["chat"], deleting=True, now=T1)
    blocked = find_condition(again.conditions, BLOCKED)
    assert blocked is not None
    assert (blocked.status, blocked.message, blocked.last_transition_time) == (
        ConditionStatus.TRUE,
        blocked_message(["chat"]),
        T0,
    )
    assert again.deployments == ["chat"]


@pytest.mark.parametrize(
    "old_phase",
    [
        pytest.param(ModelPhase.READY, id="ready"),
        pytest.param(ModelPhase.DELETION_BLOCKED, id="was-blocked"),
        pytest.param(None, id="never-accepted"),
    ],
)
def test_deleting_without_users_is_deleting(old_phase: FineTunedModelPhase | None):
    old = FineTunedModelStatus(phase=old_phase, deployments=["chat"])
    new = usage_status(old, [], deleting=True, now=T1)
    assert (new.phase, new.deployments) == (ModelPhase.DELETING, None)


def test_unblocked_deletion_clears_the_blocked_condition():
    blocked = usage_status(
        FineTunedModelStatus(phase=ModelPhase.IN_USE), ["chat"], deleting=True, now=T0
    )
    new = usage_status(blocked, [], deleting=True, now=T1)
    condition = find_condition(new.conditions, BLOCKED)
    assert condition is not None
    assert (condition.status, condition.last_transition_time) == (ConditionStatus.FALSE, T1)


# --- ModelDeployment: serving_state ---------------------------------------------------------


def make_model(phase: str | None = "Ready", *, deleting: bool = False) -> dict:
    """A FineTunedModel as the API server returns it (no status key before one is written)."""
    metadata: dict[str, Any] = {
        "name": "xbox",
        "namespace": NS,
        "uid": "uid-ftm",
        "generation": 1,
        "finalizers": ["kubetune.io/model-protection"],
    }
    if deleting:
        metadata["deletionTimestamp"] = ts(T1)
    model: dict[str, Any] = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTunedModel",
        "metadata": metadata,
        "spec": {
            "baseModel": "microsoft/Phi-3-mini-4k-instruct",
            "source": {"pvc": {"claimName": "kubetune-models", "path": "adapters/xbox"}},
        },
    }
    if phase is not None:
        model["status"] = {"phase": phase, "observedGeneration": 1}
    return model


def make_deployment(
    available: int | None = None,
    *,
    replicas: int = 1,
    progressing: tuple[str, str | None, str] = (
        "True",
        "NewReplicaSetAvailable",
        'ReplicaSet "chat-7d9c5" has successfully progressed.',
    ),
) -> dict:
    """An apps/v1 Deployment as the API server returns it."""
    status, reason, message = progressing
    conditions: list[dict[str, Any]] = [
        {
            "type": "Available",
            "status": "True" if (available or 0) >= replicas else "False",
            "reason": "MinimumReplicasAvailable",
            "message": "Deployment has minimum availability.",
            "lastUpdateTime": ts(T0),
            "lastTransitionTime": ts(T0),
        },
        {
            "type": "Progressing",
            "status": status,
            "message": message,
            "lastUpdateTime": ts(T0),
            "lastTransitionTime": ts(T0),
        },
    ]
    if reason is not None:
        conditions[1]["reason"] = reason
    dep_status: dict[str, Any] = {
        "observedGeneration": 1,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "conditions": conditions,
    }
    if available:
        dep_status["readyReplicas"] = dep_status["availableReplicas"] = available
    else:
        dep_status["unavailableReplicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "chat", "namespace": NS, "generation": 1},
        "spec": {"replicas": replicas},
        "status": dep_status,
    }


def serve(
    old: ModelDeploymentStatus | None = None,
    *,
    model: dict | None,
    deployment: dict | None = None,
    replicas: int = 1,
    now: datetime = T0,
) -> ModelDeploymentStatus:
    return serving_state(
        old or ModelDeploymentStatus(phase=DeployPhase.DEPLOYING),
        model=model,
        model_name="xbox",
        deployment=deployment,
        replicas=replicas,
        endpoint=ENDPOINT,
        generation=2,
        now=now,
    )


@pytest.mark.parametrize(
    ("model", "want_message"),
    [
        pytest.param(None, "FineTunedModel xbox does not exist", id="missing"),
        pytest.param(make_model(None), "FineTunedModel xbox is not ready", id="no-status"),
        pytest.param(
            make_model("DeletionBlocked", deleting=True),
            "FineTunedModel xbox is DeletionBlocked",
            id="deletion-blocked",
        ),
        pytest.param(
            make_model("Deleting", deleting=True), "FineTunedModel xbox is Deleting", id="deleting"
        ),
    ],
)
def test_waiting_for_model(model: dict | None, want_message: str):
    new = serve(model=model, deployment=make_deployment(1))
    assert new.phase is DeployPhase.WAITING_FOR_MODEL
    assert new.conditions == [cond("ModelReady", "False", "ModelNotReady", want_message, gen=2)]
    assert (new.endpoint, new.ready_replicas) == (None, None)


@pytest.mark.parametrize("phase", ["Ready", "InUse"])
def test_servable_model_being_deleted_is_not_ready(phase: str):
    new = serve(model=make_model(phase, deleting=True), deployment=make_deployment(1))
    assert new.phase is DeployPhase.WAITING_FOR_MODEL
    ready = find_condition(new.conditions, "ModelReady")
    assert ready is not None
    assert (ready.status, ready.reason) == (ConditionStatus.FALSE, "ModelNotReady")
    assert find_condition(new.conditions, "Available") is None


@pytest.mark.parametrize("phase", ["Ready", "InUse"])
def test_servable_model_without_a_deployment_is_deploying(phase: str):
    new = serve(model=make_model(phase), deployment=None)
    assert new.phase is DeployPhase.DEPLOYING
    assert new.conditions == [
        cond("ModelReady", "True", "ModelReady", f"FineTunedModel xbox is {phase}", gen=2),
        cond("Available", "False", "Deploying", "0/1 replicas ready", gen=2),
    ]
    assert (new.ready_replicas, new.endpoint) == (0, ENDPOINT)


@pytest.mark.parametrize(
    ("available", "replicas", "want_phase", "want_available"),
    [
        pytest.param(
            2,
            2,
            DeployPhase.READY,
            cond("Available", "True", "MinimumReplicasAvailable", f"2/2 replicas serve {ENDPOINT}"),
            id="all-available",
        ),
        pytest.param(
            3,
            2,
            DeployPhase.READY,
            cond("Available", "True", "MinimumReplicasAvailable", f"3/2 replicas serve {ENDPOINT}"),
            id="surge",
        ),
        pytest.param(
            1,
            2,
            DeployPhase.DEPLOYING,
            cond("Available", "False", "Deploying", "1/2 replicas ready"),
            id="partly-available",
        ),
        pytest.param(
            None,
            1,
            DeployPhase.DEPLOYING,
            cond("Available", "False", "Deploying", "0/1 replicas ready"),
            id="none-available",
        ),
    ],
)
def test_deployment_availability(
    available: int | None,
    replicas: int,
    want_phase: ModelDeploymentPhase,
    want_available: Condition,
):
    new = serve(
        model=make_model("InUse"),
        deployment=make_deployment(available, replicas=replicas),
        replicas=replicas,
    )
    assert new.phase is want_phase
    assert find_condition(new.conditions, "Available") == want_available.model_copy(
        update={"observed_generation": 2}
    )
    assert (new.ready_replicas, new.endpoint) == (available or 0, ENDPOINT)


@pytest.mark.parametrize(
    ("reason", "want_reason"),
    [
        pytest.param("ProgressDeadlineExceeded", "ProgressDeadlineExceeded", id="deadline"),
        pytest.param(None, "RolloutFailed", id="no-reason"),
    ],
)
def test_stalled_rollout_fails_with_the_deployment_reason(reason: str | None, want_reason: str):
    message = 'ReplicaSet "chat-7d9c5" has timed out progressing.'
    new = serve(
        model=make_model("InUse"),
        deployment=make_deployment(0, progressing=("False", reason, message)),
    )
    assert new.phase is DeployPhase.FAILED
    assert find_condition(new.conditions, "Available") == cond(
        "Available", "False", want_reason, message, gen=2
    )
    ready = find_condition(new.conditions, "ModelReady")
    assert ready is not None
    assert ready.status is ConditionStatus.TRUE


def test_model_ready_flips_once_then_keeps_its_transition_time():
    waiting = serve(model=make_model(None), now=T0)
    ready = serve(waiting, model=make_model("Ready"), deployment=make_deployment(1), now=T1)
    later = serve(ready, model=make_model("InUse"), deployment=make_deployment(1), now=T2)
    first = find_condition(waiting.conditions, "ModelReady")
    flipped = find_condition(ready.conditions, "ModelReady")
    kept = find_condition(later.conditions, "ModelReady")
    assert first is not None
    assert flipped is not None
    assert kept is not None
    assert (first.status, first.last_transition_time) == (ConditionStatus.FALSE, T0)
    assert (flipped.status, flipped.last_transition_time) == (ConditionStatus.TRUE, T1)
    assert (kept.status, kept.message, kept.last_transition_time) == (
        ConditionStatus.TRUE,
        "FineTunedModel xbox is InUse",
        T1,
    )
    assert later.phase is DeployPhase.READY


# --- status_patch ---------------------------------------------------------------------------

RUNNING = FineTuneJobStatus(
    phase=FineTuneJobPhase.RUNNING,
    observed_generation=1,
    start_time=T0,
    progress=Progress(step=10, total_steps=100, percent=10),
    conditions=[cond("Running", "True", "Training")],
)
SERVING = ModelDeploymentStatus(
    phase=DeployPhase.READY, endpoint=ENDPOINT, ready_replicas=1, observed_generation=1
)


@pytest.mark.parametrize(
    ("old", "new", "want"),
    [
        pytest.param(RUNNING, RUNNING.model_copy(), {}, id="unchanged"),
        pytest.param(
            RUNNING,
            RUNNING.model_copy(update={"phase": FineTuneJobPhase.SUCCEEDED}),
            {"phase": "Succeeded"},
            id="phase-only",
        ),
        pytest.param(
            RUNNING,
            RUNNING.model_copy(update={"progress": Progress(step=20, total_steps=100, percent=20)}),
            {"progress": {"step": 20, "totalSteps": 100, "percent": 20}},
            id="nested-field-whole-top-level-value",
        ),
        pytest.param(
            RUNNING,
            RUNNING.model_copy(
                update={
                    "completion_time": T1,
                    "conditions": [cond("Running", "False", "NowX", at=T1)],
                }
            ),
            {
                "completionTime": "2026-01-01T00:05:00Z",
                "conditions": [
                    {
                        "type": "Running",
                        "status": "False",
                        "reason": "NowX",
                        "message": "",
                        "lastTransitionTime": "2026-01-01T00:05:00Z",
                        "observedGeneration": 1,
                    }
                ],
            },
            id="added-field-and-conditions",
        ),
        pytest.param(
            RUNNING,
            RUNNING.model_copy(update={"progress": None, "start_time": None}),
            {"progress": None, "startTime": None},
            id="removed-fields-null",
        ),
        pytest.param(
            SERVING,
            SERVING.model_copy(
                update={
                    "phase": DeployPhase.WAITING_FOR_MODEL,
                    "endpoint": None,
                    "ready_replicas": 0,
                }
            ),
            {"phase": "WaitingForModel", "endpoint": None, "readyReplicas": 0},
            id="deployment-endpoint-removed",
        ),
        pytest.param(
            FineTunedModelStatus(phase=ModelPhase.IN_USE, deployments=["chat"]),
            FineTunedModelStatus(phase=ModelPhase.READY),
            {"phase": "Ready", "deployments": None},
            id="model-deployments-removed",
        ),
        pytest.param(
            FineTunedModelStatus(),
            FineTunedModelStatus(phase=ModelPhase.READY, observed_generation=4),
            {"phase": "Ready", "observedGeneration": 4},
            id="from-empty",
        ),
    ],
)
def test_status_patch(old: StatusBase, new: StatusBase, want: dict):
    assert status_patch(old, new) == want
