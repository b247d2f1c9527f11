"""Test helpers around the real control plane: kubectl as JSON, polling, the operator process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubetune.localcluster.controlplane import ControlPlane, free_port
from kubetune.localcluster.operatorproc import start_operator

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

    def __init__(self, cp: ControlPlane, log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.cp = cp
        self.log_path = log_path
        self.args = args
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_operator(
            self.cp.kubeconfig, http_port=self.port, log_path=self.log_path, args=self.args
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
