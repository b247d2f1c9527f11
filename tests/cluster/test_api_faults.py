"""API server trouble: throttling (429 with Retry-After), server errors (500/503),
expired watches (410 Gone) and a concurrent writer on the same objects. The operator
talks to the API server through a fault-injecting proxy; every job must still end
Succeeded with exactly one training Job and its model, with no update lost."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.factories import make_finetunejob
from tests.faultproxy import FaultProxy, Faults
from tests.kube import OperatorProcess, finish_running_pods, get, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

JOBS = 10


def keep_busy(cluster, namespace: str, stop: threading.Event) -> None:
    """Finish running training pods, and meanwhile write to the same FineTuneJobs and
    models the operator writes (a concurrent writer)."""
    finished: set[str] = set()
    tick = 0
    while not stop.is_set():
        tick += 1
        finish_running_pods(cluster, namespace, finished)
        for kind in ("ftj", "ftm"):
            cluster.kubectl(
                "annotate",
                kind,
                "--all",
                "-n",
                namespace,
                "--overwrite",
                f"example.com/touched={tick}",
                check=False,
            )
        time.sleep(0.5)


def test_jobs_succeed_through_throttling_errors_and_expired_watches(
    cluster, namespace, training_data, output_pvc, tmp_path
):
    proxy = FaultProxy(cluster, Faults(rate=0.15, watch_expiries=4, seed=7))
    proxy.start()
    op = OperatorProcess(
        cluster,
        tmp_path / "op.log",
        ("--namespace", namespace),
        proxy.kubeconfig(tmp_path / "proxy.kubeconfig"),
    )
    stop = threading.Event()
    try:
        op.start()
        jobs = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [make_finetunejob(f"f-{i}") for i in range(JOBS)],
        }
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(jobs))
        threading.Thread(target=keep_busy, args=(cluster, namespace, stop), daemon=True).start()

        def done() -> bool:
            items = get(cluster, "ftj", "-n", namespace)["items"]
            return len(items) == JOBS and all(
                (i.get("status") or {}).get("model") == i["metadata"]["name"] for i in items
            )

        wait_for("every job Succeeded with its model", done, timeout=180)
    finally:
        stop.set()
        op.stop()
        proxy.stop()
    items = get(cluster, "ftj", "-n", namespace)["items"]
    assert {i["status"]["phase"] for i in items} == {"Succeeded"}
    assert all(i["status"]["progress"]["percent"] == 100 for i in items)
    assert sorted(
        j["metadata"]["name"] for j in get(cluster, "jobs", "-n", namespace)["items"]
    ) == sorted(f"f-{i}" for i in range(JOBS))
    models = get(cluster, "ftm", "-n", namespace)["items"]
    assert len(models) == JOBS
    assert all("kubetune.io/model-protection" in m["metadata"]["finalizers"] for m in models)
    assert {429, 500, 503, 410} <= set(proxy.injected), proxy.injected
