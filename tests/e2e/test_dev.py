"""`kubetune dev up|status|down`, the README's first command, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kubetune.localcluster.controlplane import is_alive
from tests.kube import processes_mentioning, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def kubetune(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubetune", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_dev_up_status_down(tmp_path):
    home = tmp_path / "dev"
    env = {**os.environ, "KUBETUNE_DEV_HOME": str(home)}
    pids: dict[str, int] = {}
    try:
        up = kubetune("dev", "up", env=env)
        assert up.returncode == 0, up.stderr
        export = up.stdout.strip().splitlines()[-1]
        assert export == f"export KUBECONFIG={home / 'kubeconfig'}"

        status = kubetune("dev", "status", env=env)
        assert status.returncode == 0, status.stdout
        for component in (
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
            "kubetune-operator",
        ):
            assert component in status.stdout

        state = json.loads((home / "state.json").read_text())
        pids = state["pids"]
        assert set(pids) >= {"kube-apiserver", "kubetune-operator"}
        kubectl = state["kubectl_path"]
        kube_env = {**os.environ, "KUBECONFIG": str(home / "kubeconfig")}
        wait_for(
            "the example running",
            lambda: (
                subprocess.run(
                    [kubectl, "get", "ftj", "xbox-support", "-o", "jsonpath={.status.phase}"],
                    capture_output=True,
                    text=True,
                    env=kube_env,
                ).stdout
                == "Running"
            ),
        )
        got = subprocess.run(
            [kubectl, "get", "ftj", "-o", "json"],
            capture_output=True,
            text=True,
            env=kube_env,
            check=True,
        )
        phases = {
            i["metadata"]["name"]: i["status"]["phase"] for i in json.loads(got.stdout)["items"]
        }
        assert phases["xbox-support"] == "Running"

        again = kubetune("dev", "up", env=env)
        assert again.returncode == 0
        assert "already running" in again.stderr
        assert processes_mentioning(str(home))
    finally:
        down = kubetune("dev", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert [name for name, pid in pids.items() if is_alive(pid)] == []
    assert processes_mentioning(str(home)) == []
    assert kubetune("dev", "status", env=env).returncode == 3
