"""Prometheus metrics of the operator, served on /metrics by httpserver.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "kubetune_reconcile_total",
    "Reconciliations by kind, handler and result (ok, error).",
    ["kind", "handler", "result"],
)
RECONCILE_SECONDS = Histogram(
    "kubetune_reconcile_duration_seconds",
    "Time spent in one reconciliation.",
    ["kind", "handler"],
)

JOBS_BY_PHASE = Gauge(
    "kubetune_finetunejobs",
    "FineTuneJobs by backend and phase (empty phase: not yet accepted).",
    ["backend", "phase"],
)
FAILURES = Counter(
    "kubetune_spec_failures_total",
    "Resources failed before running because their spec cannot be acted on, by kind and reason.",
    ["kind", "reason"],
)
REPORTS = Counter(
    "kubetune_trainer_reports_total",
    "Progress reports received from training pods, by HTTP status returned.",
    ["status"],
)

AZURE_REQUESTS = Counter(
    "kubetune_azure_requests_total",
    "HTTP requests to Azure's management and workspace APIs, by operation and status code.",
    ["operation", "code"],
)


@contextmanager
def observe_reconcile(kind: str, handler: str) -> Iterator[None]:
    """Count and time one reconciliation; an exception counts as an error and propagates."""
    start = time.perf_counter()
    result = "error"
    try:
        yield
        result = "ok"
    finally:
        RECONCILE_SECONDS.labels(kind, handler).observe(time.perf_counter() - start)
        RECONCILES.labels(kind, handler, result).inc()
