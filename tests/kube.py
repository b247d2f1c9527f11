"""Test helpers around the real control plane: kubectl as JSON, polling, the operator process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

from kubetune.localcluster.controlplane import ControlPlane, free_port
from kubetune.localcluster.operatorproc import start_operator
from tests.secretscan import remember

ROOT = Path(__file__).resolve().parents[1]
KWOK_STAGES = ROOT / "tests" / "cluster" / "kwok" / "stages.yaml"

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def get(cp: ControlPlane, *args: str) -> Any:
    """`kubectl get ... -o json`, parsed; None when the object does not exist."""
    done = cp.kubectl("get", *args, "-o", "json", check=False)
    if done.returncode != 0:
        if "NotFound" in done.stderr:
            return None
        raise AssertionError(done.stderr)
    return json.loads(done.stdout)


def apply(
    cp: ControlPlane, manifest: dict[str, Any] | str, namespace: str
) -> subprocess.CompletedProcess[str]:
    """`kubectl apply` of a dict or YAML text; returns the result without raising."""
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    return cp.kubectl("apply", "-n", namespace, "-f", "-", input=text, check=False)


class OperatorProcess:
    """`kubetune run` in its own process, so tests can kill and restart it."""

    def __init__(
        self,
        cp: ControlPlane,
        log_path: Path,
        args: tuple[str, ...] = (),
        kubeconfig: Path | None = None,
    ) -> None:
        self.cp = cp
        self.log_path = log_path
        self.args = args
        self.kubeconfig = kubeconfig or cp.kubeconfig
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_operator(
            self.kubeconfig, http_port=self.port, log_path=self.log_path, args=self.args
        )

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text()


def processes_mentioning(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


def pod_token(
    cluster: ControlPlane, namespace: str, pod: dict[str, Any], audience: str = "kubetune"
) -> str:
    """A token exactly like the one the kubelet projects into the training pod
    (remembered: no status, event or log may show it, see tests/secretscan.py)."""
    token = cluster.kubectl(
        "create",
        "token",
        pod["spec"].get("serviceAccountName", "default"),
        "-n",
        namespace,
        f"--audience={audience}",
        "--bound-object-kind=Pod",
        f"--bound-object-name={pod['metadata']['name']}",
        f"--bound-object-uid={pod['metadata']['uid']}",
    ).stdout.strip()
    remember(token)
    return token


def report(
    port: int, namespace: str, name: str, token: str | None, body: dict[str, Any]
) -> tuple[int, str]:
    """POST a report the way the trainer does."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/namespaces/{namespace}/finetunejobs/{name}/report",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())["message"]
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["message"]


def running_pod(
    cluster: ControlPlane, namespace: str, job: str, exclude: Collection[str] = ()
) -> dict[str, Any]:
    """A Running pod of the Job `job` (a FineTuneJob's training Job has its name), other
    than those named in `exclude`: waited for."""
    return wait_for(
        f"a running pod of Job {job}",
        lambda: next(
            (
                p
                for p in get(cluster, "pods", "-n", namespace, "-l", f"job-name={job}")["items"]
                if p["status"].get("phase") == "Running" and p["metadata"]["name"] not in exclude
            ),
            None,
        ),
    )


def end_pod(
    cluster: ControlPlane, namespace: str, pod: dict[str, Any], code: int, reason: str = ""
) -> None:
    """End a Running pod's container as the test's kwok stages do: with exit `code`, and
    `reason` as the container's termination reason (e.g. OOMKilled) if given."""
    notes = [f"kwok.kubetune.io/exit-code={code}"]
    if reason:
        notes.append(f"kwok.kubetune.io/reason={reason}")
    cluster.kubectl("annotate", "pod", pod["metadata"]["name"], "-n", namespace, *notes)


def finish_running_pods(cluster: ControlPlane, namespace: str, finished: set[str]) -> None:
    """What a successful trainer does: end each running training pod with exit code 0
    (once; `finished` remembers which). Quietly does nothing while the API server is away."""
    listed = cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", "kubetune.io/finetunejob", "-o", "json", check=False
    )
    if listed.returncode != 0:
        return
    for pod in json.loads(listed.stdout)["items"]:
        name = pod["metadata"]["name"]
        if pod["status"].get("phase") != "Running" or name in finished:
            continue
        done = cluster.kubectl(
            "annotate", "pod", name, "-n", namespace, "kwok.kubetune.io/exit-code=0", check=False
        )
        if done.returncode == 0:
            finished.add(name)
