"""Several replicas: only the highest-priority operator acts; when it dies, a standby
takes over within 30 s and no FineTuneJob gets a second training Job."""

from __future__ import annotations

import re
import signal
import time

import pytest

from tests.factories import make_finetunejob
from tests.kube import OperatorProcess, apply, get, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def jobs_created(*logs: str) -> list[str]:
    """The training Jobs the replicas say they created (one line per create that made one)."""
    return [m for log in logs for m in re.findall(r"created training Job (\S+)", log)]


def test_one_replica_acts_and_a_standby_takes_over(
    cluster, namespace, peering_crds, training_data, output_pvc, tmp_path
):
    def replica(name: str, priority: int) -> OperatorProcess:
        return OperatorProcess(
            cluster,
            tmp_path / f"{name}.log",
            ("--namespace", namespace, "--peering", "kubetune", "--priority", str(priority)),
        )

    active, standby = replica("active", 200), replica("standby", 100)
    active.start()
    standby.start()
    try:
        # Both start paused until the peering settles; only the higher priority resumes.
        wait_for("the active replica to resume", lambda: "Resuming operations" in active.log())
        for name in ("a", "b", "c"):
            apply(cluster, make_finetunejob(name), namespace)
        wait_for("three Jobs", lambda: len(get(cluster, "jobs", "-n", namespace)["items"]) == 3)
        assert "kind=FineTuneJob" in active.log()
        assert "kind=FineTuneJob" not in standby.log()
        assert "Resuming operations" not in standby.log()

        active.stop(signal.SIGKILL)
        killed = time.monotonic()
        apply(cluster, make_finetunejob("after"), namespace)
        wait_for(
            "the standby to create the new Job",
            lambda: get(cluster, "job", "after", "-n", namespace),
            timeout=45,
        )
        takeover = time.monotonic() - killed
        assert takeover < 30, f"takeover took {takeover:.1f}s"
        assert "Resuming operations" in standby.log()
    finally:
        standby.stop()
        active.stop()
    names = sorted(j["metadata"]["name"] for j in get(cluster, "jobs", "-n", namespace)["items"])
    assert names == ["a", "after", "b", "c"]
    # No FineTuneJob got a second Job: no replica created one twice, and the standby
    # created the one applied after the takeover.
    created = jobs_created(active.log(), standby.log())
    assert sorted(created) == names, created
    assert "after" in jobs_created(standby.log())
