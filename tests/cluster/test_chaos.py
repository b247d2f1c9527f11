"""Chaos: 50 concurrent local jobs while the operator is killed with SIGKILL at five
random moments and the API server restarts once. Every FineTuneJob must end
Succeeded with exactly one training Job, and no phase may ever go backwards."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from collections import defaultdict

import pytest

from kubetune.localcluster import controlplane
from tests.factories import make_finetunejob
from tests.kube import finish_running_pods, get, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

JOBS = 50
ORDER = {"Pending": 0, "Queued": 1, "Running": 2, "Succeeded": 3}


class PhaseRecorder(threading.Thread):
    """Every phase each FineTuneJob shows, from a watch (re-opened when it breaks)."""

    def __init__(self, cluster, namespace: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.namespace = cluster, namespace
        self.history: dict[str, list[str]] = defaultdict(list)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            watch = subprocess.Popen(
                [
                    str(self.cluster.kubectl_path),
                    "--kubeconfig",
                    str(self.cluster.kubeconfig),
                    "get",
                    "ftj",
                    "-n",
                    self.namespace,
                    "--watch",
                    "-o",
                    "json",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            decoder, buffer = json.JSONDecoder(), ""
            assert watch.stdout is not None
            for line in watch.stdout:
                buffer += line
                try:
                    obj, end = decoder.raw_decode(buffer.strip())
                except ValueError:
                    continue
                buffer = buffer.strip()[end:]
                self.record(obj)
                if self.done.is_set():
                    break
            watch.kill()
            watch.wait()
            watch.stdout.close()
            time.sleep(0.5)

    def record(self, obj: dict) -> None:
        phase = (obj.get("status") or {}).get("phase")
        seen = self.history[obj["metadata"]["name"]]
        if phase and (not seen or seen[-1] != phase):
            seen.append(phase)


def keep_finishing(cluster, namespace: str, stop: threading.Event) -> None:
    finished: set[str] = set()
    while not stop.is_set():
        finish_running_pods(cluster, namespace, finished)
        time.sleep(1)


def test_chaos(cluster, namespace, operator, training_data, output_pvc):
    rng = random.Random(20261124)
    recorder = PhaseRecorder(cluster, namespace)
    recorder.start()
    jobs = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [make_finetunejob(f"chaos-{i:02d}") for i in range(JOBS)],
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(jobs))
    stop = threading.Event()
    completer = threading.Thread(
        target=keep_finishing, args=(cluster, namespace, stop), daemon=True
    )
    completer.start()
    try:
        for kill in range(5):
            time.sleep(rng.uniform(0.5, 4.0))
            operator.stop(signal.SIGKILL)
            if kill == 2:
                controlplane.restart(cluster, "kube-apiserver")
            operator.start()

        def all_succeeded() -> bool:
            items = get(cluster, "ftj", "-n", namespace)["items"]
            return len(items) == JOBS and all(
                (i.get("status") or {}).get("phase") == "Succeeded" for i in items
            )

        wait_for("every job Succeeded", all_succeeded, timeout=240)
    finally:
        stop.set()
        recorder.done.set()
    training_jobs = sorted(
        j["metadata"]["name"] for j in get(cluster, "jobs", "-n", namespace)["items"]
    )
    assert training_jobs == [f"chaos-{i:02d}" for i in range(JOBS)]
    wait_for("every model", lambda: len(get(cluster, "ftm", "-n", namespace)["items"]) == JOBS)
    backwards = {
        name: phases
        for name, phases in recorder.history.items()
        if [ORDER[p] for p in phases] != sorted(ORDER[p] for p in phases)
    }
    assert backwards == {}
    assert len(recorder.history) == JOBS
