"""Progress and metrics reports from training pods (see docs/progress-reports.md).

A trainer POSTs JSON to `/v1/namespaces/{ns}/finetunejobs/{name}/report` on the
operator, with `Authorization: Bearer <token>`: the pod's projected
service-account token, audience `kubetune`, bound to the pod. The operator asks
the API server's TokenReview who the token belongs to and accepts the report only
if the token's pod exists, has the token's uid, lives in that namespace and is a
pod of that FineTuneJob. Training pods need no RBAC and cannot write anything but
their own job's progress. Accepted reports become a status patch.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field

from pydantic import Field, ValidationError

from kubetune.api.common import KubeModel
from kubetune.api.finetunejob import FineTuneJobStatus, Metrics, Progress
from kubetune.backends.local.manifests import FINETUNEJOB_LABEL, PROGRESS_AUDIENCE
from kubetune.k8s import Kube
from kubetune.reconcile.finetunejob import merge_report

log = logging.getLogger(__name__)

POD_NAME = "authentication.kubernetes.io/pod-name"
POD_UID = "authentication.kubernetes.io/pod-uid"
# How long a reviewed token is trusted without asking the API server again.
REVIEW_TTL = 300.0
FINETUNEJOBS = "finetunejobs"


class Report(KubeModel):
    """The body of a report; both parts are optional."""

    progress: Progress | None = Field(default=None, description="Progress while training.")
    metrics: Metrics | None = Field(default=None, description="Evaluation metrics.")


@dataclass(frozen=True)
class Outcome:
    status: int
    message: str


@dataclass
class ReportSink:
    kube: Kube
    _reviewed: dict[str, tuple[float, str, str]] = field(default_factory=dict)

    async def _job_of_token(self, token: str, namespace: str) -> str | Outcome:
        """The FineTuneJob whose pod holds the token, or why the token is refused."""
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._reviewed.get(key)
        if cached and cached[0] > time.monotonic() and cached[1] == namespace:
            return cached[2]
        review = (await self.kube.review_token(token, PROGRESS_AUDIENCE)).get("status") or {}
        if not review.get("authenticated"):
            return Outcome(401, "token not accepted by the API server")
        user = review.get("user") or {}
        parts = (user.get("username") or "").split(":")
        if parts[:2] != ["system", "serviceaccount"] or len(parts) != 4 or parts[2] != namespace:
            return Outcome(403, "the token is not a service-account token of this namespace")
        extra = user.get("extra") or {}
        pod_name, pod_uid = (extra.get(POD_NAME) or [None])[0], (extra.get(POD_UID) or [None])[0]
        if not pod_name:
            return Outcome(403, "the token is not bound to a pod")
        pod = await self.kube.get_pod(namespace, pod_name)
        if pod is None or pod["metadata"].get("uid") != pod_uid:
            return Outcome(403, f"pod {pod_name} of the token no longer exists")
        job = (pod["metadata"].get("labels") or {}).get(FINETUNEJOB_LABEL)
        if not job:
            return Outcome(403, f"pod {pod_name} is not a training pod")
        self._reviewed[key] = (time.monotonic() + REVIEW_TTL, namespace, job)
        return str(job)

    async def accept(self, namespace: str, name: str, token: str, body: bytes) -> Outcome:
        if not token:
            return Outcome(401, "missing bearer token")
        job = await self._job_of_token(token, namespace)
        if isinstance(job, Outcome):
            return job
        if job != name:
            return Outcome(403, f"a pod of FineTuneJob {job} cannot report for {name}")
        try:
            report = Report.model_validate_json(body)
        except ValidationError as e:
            return Outcome(400, f"invalid report: {e.errors()[0]['msg']}")
        ftj = await self.kube.get_custom(FINETUNEJOBS, namespace, name)
        if ftj is None:
            return Outcome(404, f"FineTuneJob {namespace}/{name} not found")
        old = FineTuneJobStatus.model_validate(ftj.get("status") or {})
        patch = merge_report(old, report.progress, report.metrics)
        if patch:
            await self.kube.patch_custom_status(FINETUNEJOBS, namespace, name, patch)
        log.debug("report namespace=%s name=%s fields=%s", namespace, name, sorted(patch))
        return Outcome(200, "accepted" if patch else "nothing to record")
