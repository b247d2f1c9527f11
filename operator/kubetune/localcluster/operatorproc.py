"""Runs `kubetune run` as its own process against a local control plane, so that
tests (and `kubetune dev`) can kill and restart it like a real deployment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path


class OperatorNotHealthy(RuntimeError):
    """The operator exited or did not answer /healthz in time."""


def start_operator(
    kubeconfig: Path,
    *,
    http_port: int,
    log_path: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start the operator in its own process group and wait until /healthz answers."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubetune",
                "run",
                "--http-host=127.0.0.1",
                f"--http-port={http_port}",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {}), "KUBECONFIG": str(kubeconfig)},
            start_new_session=True,
        )
    wait_healthy(proc, http_port, log_path)
    return proc


def wait_healthy(
    proc: subprocess.Popen[bytes], http_port: int, log_path: Path, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OperatorNotHealthy(f"operator exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise OperatorNotHealthy(f"operator did not answer /healthz in {timeout:.0f}s; see {log_path}")
