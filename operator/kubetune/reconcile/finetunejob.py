"""FineTuneJob status from what the local backend observes. Pure: no I/O, clock injected.

`observe_training` reads a training Job and its pods (as the API returns them) and
says what phase the run is in and why; `next_status` folds that into the status:
phases only move forward once terminal, `startTime`/`completionTime` are set once,
and each phase has a condition whose message carries the real cause (the
scheduler's reason while Queued, the pod's termination reason when Failed) — no
"Pending trap".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from kubetune.api.common import ConditionStatus
from kubetune.api.finetunejob import FineTuneJobPhase, FineTuneJobStatus, Metrics, Progress
from kubetune.conditions import find_condition, set_condition
from kubetune.datavalidation import BAD_INPUT_EXIT_CODE
from kubetune.trainer.errors import UNSUPPORTED_EXIT_CODE

Phase = FineTuneJobPhase
TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})
# Phases that have a condition of the same name.
PHASE_CONDITIONS = (Phase.QUEUED, Phase.RUNNING, Phase.SUSPENDED, Phase.SUCCEEDED, Phase.FAILED)
# The trainer's exit codes that fail a job without retry, as condition reasons.
NOT_RETRIED: dict[int, str] = {
    BAD_INPUT_EXIT_CODE: "InvalidInput",
    UNSUPPORTED_EXIT_CODE: "Unsupported",
}
# The phases of a run before it ends, in the only order they may follow each other.
LIFECYCLE = (Phase.PENDING, Phase.QUEUED, Phase.RUNNING)


@dataclass(frozen=True)
class Observed:
    phase: FineTuneJobPhase
    reason: str
    message: str = ""
    started: datetime | None = None
    finished: datetime | None = None


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return c  # type: ignore[no-any-return]
    return None


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        state = cs.get("state") or {}
        if "terminated" in state:
            return state["terminated"]  # type: ignore[no-any-return]
    return None


def _describe_exit(pod: Mapping[str, Any]) -> str:
    term = _terminated(pod)
    if term is None:
        return ""
    reason = term.get("reason") or "Error"
    detail = f": {term['message'].strip()}" if term.get("message") else ""
    return (
        f"pod {pod['metadata']['name']} exited with code {term.get('exitCode')} ({reason}){detail}"
    )


def _newest(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)


def read_parts(status: Mapping[str, Any]) -> dict[str, Any]:
    """What observe_training reads of a Job's or pod's status: its phase and times,
    the conditions that are true or say where a pod is scheduled, and how containers
    ended. The rest (images, addresses, probe times, counters) is not kept for the
    jobs being trained (handlers/children.py): at N=5,000 it was most of the view."""
    conditions = [
        {k: v for k, v in c.items() if k != "lastProbeTime"}
        for c in status.get("conditions") or []
        if c.get("status") == "True" or c.get("type") == "PodScheduled"
    ]
    ended = [
        {"state": {"terminated": cs["state"]["terminated"]}}
        for cs in status.get("containerStatuses") or []
        if "terminated" in (cs.get("state") or {})
    ]
    kept = {k: status[k] for k in ("phase", "startTime", "completionTime") if k in status}
    return {
        **kept,
        **({"conditions": conditions} if conditions else {}),
        **({"containerStatuses": ended} if ended else {}),
    }


def observe_training(job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> Observed:
    """What the training Job and its pods say about the run."""
    if job is None:
        return Observed(Phase.PENDING, "Creating", "Creating the training Job.")
    status = job.get("status") or {}
    newest = _newest(pods)
    # Training started when a pod first ran (the Job's own startTime counts queueing).
    started = min(
        (t for p in newest if (t := _time((p.get("status") or {}).get("startTime")))),
        default=None,
    )
    failed_pods = [p for p in newest if (p.get("status") or {}).get("phase") == "Failed"]
    if (done := _condition(job, "Complete")) is not None:
        return Observed(
            Phase.SUCCEEDED,
            "Completed",
            "Training finished.",
            started,
            _time(status.get("completionTime")) or _time(done.get("lastTransitionTime")),
        )
    failed = _condition(job, "Failed") or _condition(job, "FailureTarget")
    if failed is not None:
        last_exit = _describe_exit(failed_pods[0]) if failed_pods else ""
        term = _terminated(failed_pods[0]) if failed_pods else None
        reason = failed.get("reason") or "Failed"
        if reason == "PodFailurePolicy" and term:
            reason = NOT_RETRIED.get(int(term.get("exitCode") or 0), str(reason))
        message = "; ".join(m for m in (failed.get("message"), last_exit) if m)
        return Observed(
            Phase.FAILED, reason, message, started, _time(failed.get("lastTransitionTime"))
        )
    if (job.get("spec") or {}).get("suspend") or _condition(job, "Suspended"):
        return Observed(Phase.SUSPENDED, "Suspended", "The training Job is suspended.", started)
    retry = f" (retrying after {_describe_exit(failed_pods[0])})" if failed_pods else ""
    seen = _waiting_or_running(newest, retry, started)
    if started is not None and seen.phase in (Phase.PENDING, Phase.QUEUED):
        # Training has run: the phase stays Running (it never goes back) while a retry
        # pod waits; the message says so.
        return Observed(Phase.RUNNING, "Retrying", seen.message, started)
    return seen


def _waiting_or_running(
    newest: Sequence[Mapping[str, Any]], retry: str, started: datetime | None
) -> Observed:
    """The phase the newest live pod is in: Running, Queued (unschedulable) or Pending.

    A pod that succeeded counts as training until the Job completes, and a pod that
    exists but has not started says what the Job without a pod says: each status
    write costs an API call, and these steps change nothing a user acts on."""
    for pod in newest:
        pod_status = pod.get("status") or {}
        if pod_status.get("phase") not in ("Pending", "Running", "Succeeded") or pod[
            "metadata"
        ].get("deletionTimestamp"):
            continue
        if pod_status.get("phase") != "Pending":
            return Observed(
                Phase.RUNNING,
                "Training",
                f"Training in pod {pod['metadata']['name']} on node "
                f"{(pod.get('spec') or {}).get('nodeName')}{retry}.",
                started,
            )
        for c in pod_status.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                return Observed(
                    Phase.QUEUED,
                    c.get("reason") or "Unschedulable",
                    f"Waiting for a node: {c.get('message', '')}{retry}",
                    started,
                )
        break
    return Observed(Phase.PENDING, "Starting", f"Waiting for the training pod to start{retry}.")


def next_status(
    old: FineTuneJobStatus, seen: Observed, *, generation: int, now: datetime
) -> FineTuneJobStatus:
    """Fold an observation into the status. Terminal phases never change, and the
    lifecycle Pending → Queued → Running never goes back: a queued job whose pod got a
    node and is starting stays Queued (its condition says it is starting)."""
    if old.phase in TERMINAL:
        return old
    if (
        old.phase in LIFECYCLE
        and seen.phase in LIFECYCLE
        and LIFECYCLE.index(seen.phase) < LIFECYCLE.index(old.phase)
    ):
        seen = replace(seen, phase=old.phase)
    conditions = old.conditions
    for phase in PHASE_CONDITIONS:
        if phase == seen.phase:
            conditions = set_condition(
                conditions,
                phase,
                ConditionStatus.TRUE,
                seen.reason,
                seen.message,
                generation=generation,
                now=now,
            )
        elif find_condition(conditions, phase) is not None:
            conditions = set_condition(
                conditions,
                phase,
                ConditionStatus.FALSE,
                f"Now{seen.phase}",
                "",
                generation=generation,
                now=now,
            )
    update: dict[str, Any] = {"phase": seen.phase, "conditions": conditions}
    if old.start_time is None and seen.started is not None:
        update["start_time"] = seen.started
    if seen.phase in TERMINAL:
        update["completion_time"] = seen.finished or now
        if seen.phase is Phase.SUCCEEDED:
            progress = old.progress or Progress()
            update["progress"] = progress.model_copy(update={"percent": 100, "eta": None})
    return old.model_copy(update=update)


def merge_report(
    old: FineTuneJobStatus, progress: Progress | None, metrics: Metrics | None
) -> dict[str, Any]:
    """The status patch for a trainer's report; empty when there is nothing to write."""
    patch: dict[str, Any] = {}
    if progress is not None and old.phase not in TERMINAL:
        if progress.percent is None and progress.step is not None and progress.total_steps:
            pct = min(100, int(100 * progress.step / progress.total_steps))
            progress = progress.model_copy(update={"percent": pct})
        patch["progress"] = progress.model_dump(mode="json", by_alias=True, exclude_none=True)
    if metrics is not None:
        patch["metrics"] = metrics.model_dump(mode="json", by_alias=True, exclude_none=True)
    return patch


def is_settled(metadata: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """A job that ended and whose current spec was already accepted: nothing is left
    to do for it (an operator restart re-lists it without reading or writing it)."""
    generation = metadata.get("generation", 1)
    return status.get("phase") in TERMINAL and status.get("observedGeneration") == generation
