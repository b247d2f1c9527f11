"""FineTuneJob status from the training Job and its pods (reconcile/finetunejob.py), and
the handler that folds it in on their events (handlers/finetunejob.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest

from kubetune import events
from kubetune.api.common import Condition, ConditionStatus
from kubetune.api.finetunejob import FineTuneJobPhase, FineTuneJobStatus, Metrics, Progress
from kubetune.conditions import find_condition
from kubetune.datavalidation import BAD_INPUT_EXIT_CODE
from kubetune.handlers import finetunejob as handlers
from kubetune.handlers import pollers as pollers_module
from kubetune.handlers.children import Children, slim
from kubetune.handlers.pollers import Peering, Pollers
from kubetune.handlers.status import StatusWriter
from kubetune.reconcile.finetunejob import (
    Observed,
    is_settled,
    merge_report,
    next_status,
    observe_training,
)
from kubetune.settings import LocalSettings
from tests.unit.statuskube import OneObjectKube

Phase = FineTuneJobPhase
T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=10)
T2 = T0 + timedelta(hours=2)
NS = "team-a"
NODE = "gpu-node-1"
UNSCHEDULABLE = (
    "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are "
    "available: 3 No preemption victims found for incoming pod."
)


def ts(t: datetime) -> str:
    """A timestamp as the API server writes it."""
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def job_condition(type_: str, reason: str = "", message: str = "", at: datetime = T2) -> dict:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": ts(at),
        "lastTransitionTime": ts(at),
    }


def make_job(*, suspend: bool = False, conditions: list[dict] | None = None, **status: Any) -> dict:
    """A batch/v1 Job as the API server returns it; its startTime is T0 (queueing counts)
    unless it is suspended, which clears it."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "xbox",
            "namespace": NS,
            "uid": "0b7c1f4e-job",
            "creationTimestamp": ts(T0),
            "labels": {"kubetune.io/finetunejob": "xbox"},
        },
        "spec": {"suspend": suspend, "backoffLimit": 3, "completions": 1, "parallelism": 1},
        "status": {
            **({} if suspend else {"startTime": ts(T0)}),
            **status,
            **({"conditions": conditions} if conditions else {}),
        },
    }


def running_state(started: datetime) -> dict:
    return {"running": {"startedAt": ts(started)}}


def terminated_state(exit_code: int, reason: str, message: str | None = None) -> dict:
    term: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": ts(T0),
        "finishedAt": ts(T1),
        "containerID": "containerd://abc",
    }
    if message is not None:
        term["message"] = message
    return {"terminated": term}


def make_pod(
    name: str,
    phase: str,
    *,
    created: datetime = T0,
    started: datetime | None = None,
    state: dict | None = None,
    conditions: list[dict] | None = None,
    deleting: bool = False,
) -> dict:
    """A training pod as the API server returns it."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": NS,
        "creationTimestamp": ts(created),
        "labels": {"batch.kubernetes.io/job-name": "xbox", "kubetune.io/finetunejob": "xbox"},
    }
    if deleting:
        metadata["deletionTimestamp"] = ts(T1)
        metadata["deletionGracePeriodSeconds"] = 30
    status: dict[str, Any] = {"phase": phase, "qosClass": "Burstable"}
    if conditions is not None:
        status["conditions"] = conditions
    if started is not None:
        status["startTime"] = ts(started)
    if state is not None:
        status["containerStatuses"] = [
            {"name": "trainer", "image": "trainer:1", "ready": phase == "Running", "state": state}
        ]
    spec: dict[str, Any] = {"containers": [{"name": "trainer", "image": "trainer:1"}]}
    if started is not None:
        spec["nodeName"] = NODE
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status}


def unschedulable_pod(name: str = "xbox-q7k2p", created: datetime = T0) -> dict:
    cond = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": UNSCHEDULABLE,
        "lastProbeTime": None,
        "lastTransitionTime": ts(created),
    }
    return make_pod(name, "Pending", created=created, conditions=[cond])


def running_pod(name: str = "xbox-q7k2p", created: datetime = T0, started: datetime = T1) -> dict:
    return make_pod(
        name,
        "Running",
        created=created,
        started=started,
        state=running_state(started),
        conditions=[
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
    )


def failed_pod(
    name: str,
    exit_code: int = 137,
    reason: str = "OOMKilled",
    *,
    created: datetime = T0,
    message: str | None = None,
) -> dict:
    return make_pod(
        name,
        "Failed",
        created=created,
        started=created + timedelta(minutes=1),
        state=terminated_state(exit_code, reason, message),
    )


# --- observe_training ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "pods"),
    [
        pytest.param(make_job(), [], id="no-pod"),
        pytest.param(make_job(), [unschedulable_pod()], id="unschedulable"),
        pytest.param(make_job(active=1), [running_pod()], id="running"),
        pytest.param(
            make_job(active=1),
            [failed_pod("xbox-a", message="out of memory"), running_pod("xbox-b", created=T1)],
            id="retrying",
        ),
        pytest.param(
            make_job(succeeded=1, completionTime=ts(T2), conditions=[job_condition("Complete")]),
            [make_pod("xbox-a", "Succeeded", started=T1, state=terminated_state(0, "Completed"))],
            id="complete",
        ),
        pytest.param(
            make_job(conditions=[job_condition("Failed", "PodFailurePolicy", "exit code 3")]),
            [failed_pod("xbox-a", BAD_INPUT_EXIT_CODE, "Error", message="line 7: not JSON")],
            id="failed-by-policy",
        ),
        pytest.param(make_job(suspend=True), [], id="suspended"),
        pytest.param(make_job(active=1), [make_pod("xbox-a", "Running", deleting=True)], id="gone"),
    ],
)
def test_the_view_keeps_everything_the_observation_reads(job: dict, pods: list[dict]):
    """The children view slims Jobs and pods (read_parts): nothing observe_training
    reads may be lost."""
    assert observe_training(slim(job), [slim(p) for p in pods]) == observe_training(job, pods)
    for pod in pods:
        dropped = slim(pod)["status"]
        assert "qosClass" not in dropped
        assert all("image" not in cs for cs in dropped.get("containerStatuses", []))


def test_no_job_is_being_created():
    assert observe_training(None, []) == Observed(
        Phase.PENDING, "Creating", "Creating the training Job."
    )


@pytest.mark.parametrize(
    "job",
    [
        pytest.param(make_job(suspend=True), id="spec-suspend"),
        pytest.param(
            make_job(conditions=[job_condition("Suspended", "JobSuspended", "Job suspended")]),
            id="suspended-condition",
        ),
    ],
)
def test_suspended_job(job: dict):
    assert observe_training(job, []) == Observed(
        Phase.SUSPENDED, "Suspended", "The training Job is suspended."
    )


def test_resumed_job_with_false_suspended_condition_is_not_suspended():
    cond = {**job_condition("Suspended", "JobResumed", "Job resumed"), "status": "False"}
    seen = observe_training(make_job(conditions=[cond]), [running_pod()])
    assert seen.phase is Phase.RUNNING


def test_unschedulable_pod_is_queued_with_the_scheduler_message():
    assert observe_training(make_job(active=1), [unschedulable_pod()]) == Observed(
        Phase.QUEUED, "Unschedulable", f"Waiting for a node: {UNSCHEDULABLE}"
    )


def test_scheduled_pending_pod_is_starting():
    pod = make_pod(
        "xbox-q7k2p",
        "Pending",
        conditions=[{"type": "PodScheduled", "status": "True"}],
        state={"waiting": {"reason": "ContainerCreating"}},
    )
    assert observe_training(make_job(active=1), [pod]) == Observed(
        Phase.PENDING, "Starting", "Waiting for the training pod to start."
    )


def test_job_without_pods_waits_for_the_training_pod():
    assert observe_training(make_job(), []) == Observed(
        Phase.PENDING, "Starting", "Waiting for the training pod to start."
    )


def test_running_pod_start_time_comes_from_the_pod_not_the_job():
    seen = observe_training(make_job(active=1), [running_pod(started=T1)])
    assert seen == Observed(
        Phase.RUNNING, "Training", f"Training in pod xbox-q7k2p on node {NODE}.", T1
    )
    assert seen.started != T0  # the Job's own startTime includes time spent queued


def test_complete_job_succeeded_with_completion_time():
    job = make_job(
        succeeded=1,
        completionTime=ts(T2),
        conditions=[
            job_condition("SuccessCriteriaMet", "CompletionsReached", at=T2),
            job_condition("Complete", "CompletionsReached", at=T2 + timedelta(seconds=5)),
        ],
    )
    pod = make_pod("xbox-q7k2p", "Succeeded", started=T1, state=terminated_state(0, "Completed"))
    assert observe_training(job, [pod]) == Observed(
        Phase.SUCCEEDED, "Completed", "Training finished.", T1, T2
    )


def test_complete_job_without_completion_time_uses_the_condition_time():
    job = make_job(conditions=[job_condition("Complete", "CompletionsReached", at=T2)])
    seen = observe_training(job, [])
    assert (seen.phase, seen.finished) == (Phase.SUCCEEDED, T2)


BACKOFF_MSG = "Job has reached the specified backoff limit"
DEADLINE_MSG = "Job was active longer than specified deadline"
POLICY_MSG = (
    "Container trainer for pod team-a/xbox-q7k2p failed with exit code 65 matching FailJob "
    "rule at index 0"
)


@pytest.mark.parametrize(
    ("condition", "pods", "want_reason", "want_message"),
    [
        pytest.param(
            job_condition("Failed", "BackoffLimitExceeded", BACKOFF_MSG),
            [
                failed_pod("xbox-aaaaa", 1, "Error", created=T0),
                failed_pod("xbox-bbbbb", 137, "OOMKilled", created=T1),
            ],
            "BackoffLimitExceeded",
            f"{BACKOFF_MSG}; pod xbox-bbbbb exited with code 137 (OOMKilled)",
            id="backoff-limit-last-pod",
        ),
        pytest.param(
            job_condition("Failed", "BackoffLimitExceeded", BACKOFF_MSG),
            [failed_pod("xbox-aaaaa", 1, "Error", message="CUDA error: out of memory\n")],
            "BackoffLimitExceeded",
            f"{BACKOFF_MSG}; pod xbox-aaaaa exited with code 1 (Error): CUDA error: out of memory",
            id="backoff-limit-termination-message",
        ),
        pytest.param(
            job_condition("Failed", "DeadlineExceeded", DEADLINE_MSG),
            [failed_pod("xbox-aaaaa", 143, "Error")],
            "DeadlineExceeded",
            f"{DEADLINE_MSG}; pod xbox-aaaaa exited with code 143 (Error)",
            id="deadline-exceeded",
        ),
        pytest.param(
            job_condition("Failed", "DeadlineExceeded", DEADLINE_MSG),
            [],
            "DeadlineExceeded",
            DEADLINE_MSG,
            id="deadline-exceeded-no-pods",
        ),
        pytest.param(
            job_condition("Failed", "PodFailurePolicy", POLICY_MSG),
            [failed_pod("xbox-q7k2p", BAD_INPUT_EXIT_CODE, "Error", message="line 3: bad role")],
            "InvalidInput",
            f"{POLICY_MSG}; pod xbox-q7k2p exited with code 65 (Error): line 3: bad role",
            id="bad-input-exit-code",
        ),
        pytest.param(
            job_condition("Failed", "PodFailurePolicy", "exit code 3 matching FailJob rule"),
            [failed_pod("xbox-q7k2p", 3, "Error")],
            "PodFailurePolicy",
            "exit code 3 matching FailJob rule; pod xbox-q7k2p exited with code 3 (Error)",
            id="pod-failure-policy-other-code",
        ),
        pytest.param(
            job_condition("FailureTarget", "BackoffLimitExceeded", BACKOFF_MSG),
            [failed_pod("xbox-aaaaa", 137, "OOMKilled")],
            "BackoffLimitExceeded",
            f"{BACKOFF_MSG}; pod xbox-aaaaa exited with code 137 (OOMKilled)",
            id="failure-target",
        ),
    ],
)
def test_failed_job(condition: dict, pods: list[dict], want_reason: str, want_message: str):
    seen = observe_training(make_job(failed=len(pods), conditions=[condition]), pods)
    assert (seen.phase, seen.reason, seen.message) == (Phase.FAILED, want_reason, want_message)
    assert seen.finished == T2


def test_failed_pod_then_running_pod_is_retrying():
    pods = [
        failed_pod("xbox-aaaaa", 137, "OOMKilled", created=T0),
        running_pod("xbox-bbbbb", created=T1, started=T1 + timedelta(minutes=1)),
    ]
    seen = observe_training(make_job(active=1, failed=1), pods)
    assert seen == Observed(
        Phase.RUNNING,
        "Training",
        f"Training in pod xbox-bbbbb on node {NODE} "
        "(retrying after pod xbox-aaaaa exited with code 137 (OOMKilled)).",
        T0 + timedelta(minutes=1),  # training first started in the failed pod
    )


def test_failed_pod_then_unschedulable_pod_stays_running_while_retrying():
    """Once training ran, the phase never goes back: the retry's wait is in the message."""
    pods = [failed_pod("xbox-aaaaa", created=T0), unschedulable_pod("xbox-bbbbb", created=T1)]
    seen = observe_training(make_job(active=1, failed=1), pods)
    assert (seen.phase, seen.reason, seen.message) == (
        Phase.RUNNING,
        "Retrying",
        f"Waiting for a node: {UNSCHEDULABLE} "
        "(retrying after pod xbox-aaaaa exited with code 137 (OOMKilled))",
    )


def test_finished_pod_before_the_job_completes_is_still_training():
    """The same observation as while the pod ran: no status write until the Job completes."""
    running = observe_training(make_job(active=1), [running_pod(started=T1)])
    pods = [make_pod("xbox-q7k2p", "Succeeded", created=T0, started=T1)]
    finished = observe_training(make_job(active=0, succeeded=1), pods)
    assert finished.phase is Phase.RUNNING
    assert finished == running


DELETING_RUNNING = make_pod(
    "xbox-aaaaa", "Running", created=T1, started=T1, state=running_state(T1), deleting=True
)


@pytest.mark.parametrize(
    ("pods", "want"),
    [
        pytest.param(
            [DELETING_RUNNING],
            Observed(Phase.RUNNING, "Retrying", "Waiting for the training pod to start.", T1),
            id="only-a-deleting-pod",
        ),
        pytest.param(
            [DELETING_RUNNING, make_pod("xbox-bbbbb", "Pending", created=T0)],
            Observed(Phase.RUNNING, "Retrying", "Waiting for the training pod to start.", T1),
            id="deleting-pod-skipped-for-older-pod",
        ),
        pytest.param(
            [DELETING_RUNNING, unschedulable_pod("xbox-bbbbb", created=T0)],
            Observed(Phase.RUNNING, "Retrying", f"Waiting for a node: {UNSCHEDULABLE}", T1),
            id="deleting-pod-skipped-for-queued-pod",
        ),
    ],
)
def test_deleting_pods_are_ignored(pods: list[dict], want: Observed):
    assert observe_training(make_job(active=1), pods) == want


# --- next_status ----------------------------------------------------------------------------


def cond(type_: str, status: str, reason: str, at: datetime = T0, message: str = "") -> Condition:
    return Condition(
        type=type_,
        status=ConditionStatus(status),
        reason=reason,
        message=message,
        last_transition_time=at,
        observed_generation=1,
    )


def running(
    message: str = "Pod xbox-q7k2p is training.", started: datetime | None = T1
) -> Observed:
    return Observed(Phase.RUNNING, "Training", message, started)


@pytest.mark.parametrize("phase", [Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED])
def test_terminal_phase_never_changes(phase: FineTuneJobPhase):
    old = FineTuneJobStatus(
        phase=phase,
        completion_time=T1,
        conditions=[cond("Running", "False", f"Now{phase}")],
    )
    assert next_status(old, running(), generation=2, now=T2) == old


def test_succeeded_stays_after_a_later_running_observation():
    done = next_status(
        FineTuneJobStatus(phase=Phase.RUNNING),
        Observed(Phase.SUCCEEDED, "Completed", "Training finished.", T0, T1),
        generation=1,
        now=T1,
    )
    again = next_status(done, running(), generation=1, now=T2)
    assert (again.phase, again.completion_time) == (Phase.SUCCEEDED, T1)


@pytest.mark.parametrize(
    ("old_start", "seen_start", "want"),
    [
        pytest.param(None, T1, T1, id="first-start"),
        pytest.param(T0, T1, T0, id="kept-once-set"),
        pytest.param(None, None, None, id="not-started"),
    ],
)
def test_start_time_is_set_once(
    old_start: datetime | None, seen_start: datetime | None, want: datetime | None
):
    old = FineTuneJobStatus(phase=Phase.QUEUED, start_time=old_start)
    new = next_status(old, running(started=seen_start), generation=1, now=T2)
    assert new.start_time == want


@pytest.mark.parametrize(
    ("seen", "want_completion"),
    [
        pytest.param(
            Observed(Phase.SUCCEEDED, "Completed", "Training finished.", T0, T1),
            T1,
            id="succeeded-finished-time",
        ),
        pytest.param(
            Observed(Phase.FAILED, "BackoffLimitExceeded", "oom", T0, T1), T1, id="failed"
        ),
        pytest.param(Observed(Phase.FAILED, "Failed", "gone", T0), T2, id="failed-no-time-now"),
        pytest.param(running(), None, id="running-none"),
    ],
)
def test_completion_time_on_terminal(seen: Observed, want_completion: datetime | None):
    new = next_status(FineTuneJobStatus(phase=Phase.RUNNING), seen, generation=1, now=T2)
    assert (new.phase, new.completion_time) == (seen.phase, want_completion)


@pytest.mark.parametrize(
    ("old_progress", "want"),
    [
        pytest.param(
            Progress(step=90, total_steps=100, percent=90, eta=T2, train_loss=0.5),
            Progress(step=90, total_steps=100, percent=100, eta=None, train_loss=0.5),
            id="with-progress",
        ),
        pytest.param(None, Progress(percent=100), id="without-progress"),
    ],
)
def test_success_completes_progress(old_progress: Progress | None, want: Progress):
    old = FineTuneJobStatus(phase=Phase.RUNNING, progress=old_progress)
    seen = Observed(Phase.SUCCEEDED, "Completed", "Training finished.", T0, T1)
    assert next_status(old, seen, generation=1, now=T2).progress == want


def test_failure_keeps_progress():
    progress = Progress(step=40, total_steps=100, percent=40, eta=T2)
    old = FineTuneJobStatus(phase=Phase.RUNNING, progress=progress)
    seen = Observed(Phase.FAILED, "BackoffLimitExceeded", "oom", T0, T1)
    assert next_status(old, seen, generation=1, now=T2).progress == progress


def test_condition_of_the_current_phase_is_true_and_previous_flips_false():
    old = FineTuneJobStatus(
        phase=Phase.QUEUED,
        conditions=[cond("Queued", "True", "Unschedulable", T0, "Waiting for a node")],
    )
    new = next_status(old, running("Pod p is training."), generation=2, now=T1)
    assert new.phase is Phase.RUNNING
    assert new.conditions == [
        cond("Queued", "False", "NowRunning", T1).model_copy(update={"observed_generation": 2}),
        cond("Running", "True", "Training", T1, "Pod p is training.").model_copy(
            update={"observed_generation": 2}
        ),
    ]


@pytest.mark.parametrize(
    ("seen", "want_type"),
    [
        pytest.param(Observed(Phase.QUEUED, "Unschedulable", "no gpu"), "Queued", id="queued"),
        pytest.param(running(), "Running", id="running"),
        pytest.param(Observed(Phase.SUSPENDED, "Suspended", "paused"), "Suspended", id="susp"),
        pytest.param(Observed(Phase.SUCCEEDED, "Completed", "done", T0, T1), "Succeeded", id="ok"),
        pytest.param(Observed(Phase.FAILED, "DeadlineExceeded", "late"), "Failed", id="failed"),
    ],
)
def test_each_phase_has_its_condition(seen: Observed, want_type: str):
    new = next_status(FineTuneJobStatus(phase=Phase.PENDING), seen, generation=3, now=T1)
    got = find_condition(new.conditions, want_type)
    assert got == Condition(
        type=want_type,
        status=ConditionStatus.TRUE,
        reason=seen.reason,
        message=seen.message,
        last_transition_time=T1,
        observed_generation=3,
    )
    assert [c.type for c in new.conditions] == [want_type]


def test_pending_has_no_condition_and_flips_others_false():
    old = FineTuneJobStatus(
        phase=Phase.SUSPENDED, conditions=[cond("Suspended", "True", "Suspended")]
    )
    seen = Observed(Phase.PENDING, "Starting", "Waiting for the training pod to start.")
    new = next_status(old, seen, generation=1, now=T1)
    assert new.phase is Phase.PENDING
    assert [(c.type, c.status, c.reason, c.last_transition_time) for c in new.conditions] == [
        ("Suspended", ConditionStatus.FALSE, "NowPending", T1)
    ]


def test_transition_time_changes_only_on_a_flip():
    first = next_status(
        FineTuneJobStatus(phase=Phase.QUEUED),
        Observed(Phase.QUEUED, "Unschedulable", "no gpu"),
        generation=1,
        now=T0,
    )
    running_at_t1 = next_status(first, running("first"), generation=1, now=T1)
    running_at_t2 = next_status(running_at_t1, running("second"), generation=1, now=T2)
    queued = find_condition(running_at_t2.conditions, "Queued")
    run = find_condition(running_at_t2.conditions, "Running")
    assert queued is not None
    assert run is not None
    assert (queued.status, queued.last_transition_time) == (ConditionStatus.FALSE, T1)
    assert (run.status, run.message, run.last_transition_time) == (
        ConditionStatus.TRUE,
        "second",
        T1,
    )


# --- merge_report ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "progress", "metrics", "want"),
    [
        pytest.param(
            Phase.RUNNING,
            Progress(epoch=0.5, step=50, total_steps=200, train_loss=1.25),
            None,
            {
                "progress": {
                    "epoch": 0.5,
                    "step": 50,
                    "totalSteps": 200,
                    "percent": 25,
                    "trainLoss": 1.25,
                }
            },
            id="percent-from-steps",
        ),
        pytest.param(
            Phase.RUNNING,
            Progress(step=2, total_steps=3),
            None,
            {"progress": {"step": 2, "totalSteps": 3, "percent": 66}},
            id="percent-rounds-down",
        ),
        pytest.param(
            Phase.RUNNING,
            Progress(step=250, total_steps=200),
            None,
            {"progress": {"step": 250, "totalSteps": 200, "percent": 100}},
            id="percent-capped",
        ),
        pytest.param(
            Phase.RUNNING,
            Progress(step=50, total_steps=200, percent=30),
            None,
            {"progress": {"step": 50, "totalSteps": 200, "percent": 30}},
            id="reported-percent-kept",
        ),
        pytest.param(
            Phase.RUNNING,
            Progress(step=5, total_steps=0),
            None,
            {"progress": {"step": 5, "totalSteps": 0}},
            id="no-total-no-percent",
        ),
        pytest.param(
            Phase.RUNNING,
            Progress(step=10, total_steps=100, eta=T2),
            None,
            {
                "progress": {
                    "step": 10,
                    "totalSteps": 100,
                    "percent": 10,
                    "eta": "2026-01-01T02:00:00Z",
                }
            },
            id="eta-as-json",
        ),
        pytest.param(
            Phase.SUCCEEDED,
            Progress(step=50, total_steps=200),
            None,
            {},
            id="progress-ignored-when-succeeded",
        ),
        pytest.param(
            Phase.FAILED,
            Progress(step=50, total_steps=200),
            Metrics(train_loss=0.9),
            {"metrics": {"trainLoss": 0.9}},
            id="metrics-recorded-when-failed",
        ),
        pytest.param(
            Phase.SUCCEEDED,
            None,
            Metrics(train_loss=0.4, validation_loss=0.5, perplexity=1.65, token_accuracy=0.8),
            {
                "metrics": {
                    "trainLoss": 0.4,
                    "validationLoss": 0.5,
                    "perplexity": 1.65,
                    "tokenAccuracy": 0.8,
                }
            },
            id="metrics-after-success",
        ),
        pytest.param(
            Phase.RUNNING,
            Progress(step=1, total_steps=4),
            Metrics(validation_loss=2.0),
            {
                "progress": {"step": 1, "totalSteps": 4, "percent": 25},
                "metrics": {"validationLoss": 2.0},
            },
            id="both",
        ),
        pytest.param(Phase.RUNNING, None, None, {}, id="nothing"),
    ],
)
def test_merge_report(
    phase: FineTuneJobPhase, progress: Progress | None, metrics: Metrics | None, want: dict
):
    assert merge_report(FineTuneJobStatus(phase=phase), progress, metrics) == want


@pytest.mark.parametrize(
    ("old", "seen", "want"),
    [
        pytest.param(Phase.QUEUED, Phase.PENDING, Phase.QUEUED, id="queued-then-starting"),
        pytest.param(Phase.RUNNING, Phase.PENDING, Phase.RUNNING, id="running-then-pending"),
        pytest.param(Phase.RUNNING, Phase.QUEUED, Phase.RUNNING, id="running-then-queued"),
        pytest.param(Phase.PENDING, Phase.QUEUED, Phase.QUEUED, id="forward"),
        pytest.param(Phase.SUSPENDED, Phase.PENDING, Phase.PENDING, id="resumed"),
    ],
)
def test_lifecycle_phases_never_go_back(old, seen, want):
    new = next_status(
        FineTuneJobStatus(phase=old),
        Observed(seen, "Starting", "Pod xbox-aaaaa is starting."),
        generation=1,
        now=T0,
    )
    assert new.phase is want
    if want is not Phase.PENDING:  # the kept phase's condition tells what happens now
        (current,) = [c for c in new.conditions if c.type == want]
        assert (current.status, current.message) == ("True", "Pod xbox-aaaaa is starting.")


@pytest.mark.parametrize(
    ("status", "generation", "want"),
    [
        pytest.param({"phase": "Succeeded", "observedGeneration": 2}, 2, True, id="done"),
        pytest.param({"phase": "Failed", "observedGeneration": 1}, 1, True, id="failed"),
        pytest.param({"phase": "Succeeded", "observedGeneration": 1}, 2, False, id="spec-changed"),
        pytest.param({"phase": "Running", "observedGeneration": 1}, 1, False, id="running"),
        pytest.param({}, 1, False, id="new"),
    ],
)
def test_is_settled(status: dict, generation: int, want: bool):
    assert is_settled({"generation": generation}, status) is want


# --- training Job and pod events (handlers) -------------------------------------------


def handler(registry: kopf.OperatorRegistry, id_: str) -> Callable[..., Any]:
    # Kopf has no public getter of a registry's handlers.
    return next(h.fn for h in registry._watching.get_all_handlers() if h.id == id_)


def job_memo(kube: OneObjectKube, children: Children, peering: str | None = None) -> kopf.Memo:
    """What the handlers find in the memo; `peering` names the peering object of a
    replica with priority 10 (None: standalone)."""
    return kopf.Memo(
        kube=kube,
        status=StatusWriter(kube),  # type: ignore[arg-type]
        phases={},
        children=children,
        applied={},
        pollers=Pollers(Peering(kube, peering, 10, clusterwide=True)),  # type: ignore[arg-type]
    )


@pytest.fixture
def child_events(monkeypatch: pytest.MonkeyPatch):
    """(send a pod event with these pods, send the FineTuneJob's DELETED event, the Kube)."""
    monkeypatch.setattr(events, "info", lambda *a, **k: None)  # no operator to post Events
    registry = kopf.OperatorRegistry()
    handlers.register(registry, LocalSettings())
    on_ftj = handler(registry, "count_phases")
    kube = OneObjectKube(
        {
            "metadata": {
                "name": "xbox",
                "namespace": NS,
                "uid": "ftj",
                "generation": 1,
                "resourceVersion": "1",
            },
            "spec": {"backend": "local"},
            "status": {"phase": "Queued"},
        }
    )
    children = Children()
    memo = job_memo(kube, children)
    key = (NS, "xbox")

    def pod_event(*pods: dict, finished: bool = False) -> list[str]:
        """The last pod's event, the others as seen before."""
        kube.calls.clear()
        children.jobs[key] = slim(make_job(active=1))
        children.pods[key] = {p["metadata"]["name"]: slim(p) for p in pods}
        if finished:
            children.finish(key)
        asyncio.run(handlers.sync_training(memo, LocalSettings(), key))
        return [verb for verb, _ in kube.calls]

    def deleted() -> None:
        event = {"type": "DELETED", "object": kube.obj}
        asyncio.run(on_ftj(event=event, body=kube.obj, memo=memo))

    return pod_event, deleted, kube


def test_an_unchanged_observation_makes_no_api_call(child_events):
    pod_event, _, kube = child_events
    assert pod_event(running_pod()) == ["get", "patch"]
    assert kube.obj["status"]["phase"] == "Running"
    assert pod_event(running_pod()) == []  # e.g. the pod's Ready condition was probed again


def test_events_of_a_finished_job_make_no_api_call(child_events):
    """After a restart too: the index of finished jobs is filled before any handler runs."""
    pod_event, _, _ = child_events
    assert pod_event(running_pod(), finished=True) == []


def test_a_changed_observation_is_written(child_events):
    pod_event, _, kube = child_events
    pod_event(running_pod())
    retry = [failed_pod("xbox-aaaaa", created=T0), running_pod("xbox-bbbbb", created=T1)]
    assert pod_event(*retry) == ["patch"]  # over the version it wrote: no read
    assert "retrying" in kube.obj["status"]["conditions"][-1]["message"]


def test_a_skipped_observation_never_moves_the_phase_back(child_events):
    pod_event, _, kube = child_events
    pod_event(running_pod())
    assert pod_event(unschedulable_pod()) == ["patch"]  # the message changes
    assert pod_event(running_pod()) == ["patch"]
    assert pod_event(unschedulable_pod()) == ["patch"]
    assert kube.obj["status"]["phase"] == "Running"


def test_the_memo_of_a_deleted_job_is_forgotten(child_events):
    pod_event, deleted, _ = child_events
    pod_event(running_pod())
    deleted()
    assert pod_event(running_pod()) == ["get"]  # a new job of the same name is read again


def test_a_queued_reconcile_waits_while_a_peer_outranks_this_replica(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reconcile's retry comes from our work queue, which Kopf's pause of a standby
    replica does not hold: the reconcile itself waits for its turn."""
    monkeypatch.setattr(pollers_module, "PAUSED_RECHECK", 0.01)
    monkeypatch.setattr(pollers_module, "PEERING_FRESH", 0.0)
    monkeypatch.setattr(events, "warn", lambda *a, **k: None)
    monkeypatch.setattr(events, "info", lambda *a, **k: None)
    obj = {
        "metadata": {"name": "xbox", "namespace": NS, "generation": 1, "resourceVersion": "1"},
        "spec": {"backend": "local"},  # no base model: rejected once it is looked at
        "status": {},
    }
    kube = OneObjectKube(obj)
    lastseen = datetime.now(UTC).isoformat()
    peers = {"other": {"priority": 20, "lifetime": 60, "lastseen": lastseen}}

    async def get(url: str) -> dict[str, Any]:
        return {"status": peers}

    kube.get = get  # type: ignore[attr-defined]
    memo = job_memo(kube, Children(), peering="kubetune")

    async def main() -> None:
        work = asyncio.ensure_future(handlers.reconcile_job(memo, LocalSettings(), (NS, "xbox")))
        await asyncio.sleep(0.1)
        assert not work.done()
        assert kube.calls == []  # nothing read or written while outranked
        peers.clear()  # the other replica is gone
        assert await asyncio.wait_for(work, 5) is None

    asyncio.run(main())
    assert [verb for verb, _ in kube.calls] == ["get", "patch"]
    assert kube.obj["status"]["phase"] == "Failed"
