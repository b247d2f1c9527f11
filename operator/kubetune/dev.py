"""`kubetune dev up|status|down`: a local control plane with the operator and the examples.

`up` builds the control plane's binaries when they are missing (minutes, once),
starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok with
simulated GPU nodes, installs the CRDs, starts the operator in the background,
applies examples/ and returns when the operator has picked the examples up. The
kubeconfig is written to $KUBETUNE_DEV_HOME/kubeconfig (default
~/.cache/kubetune/dev/kubeconfig). `down` stops every process `up` started.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from kubetune.localcluster import controlplane
from kubetune.localcluster.binaries import BinariesUnavailable, find_binaries, source_root
from kubetune.localcluster.controlplane import ControlPlane, ControlPlaneError
from kubetune.localcluster.operatorproc import OperatorNotHealthy, start_operator
from kubetune.localcluster.storage import build_static_pv

OPERATOR = "kubetune-operator"
EXAMPLE_CLAIM = "kubetune-models"


def dev_home() -> Path:
    default = Path.home() / ".cache" / "kubetune" / "dev"
    return Path(os.environ.get("KUBETUNE_DEV_HOME", default))


def _state_file() -> Path:
    return dev_home() / "state.json"


def _say(message: str) -> None:
    print(f"[kubetune dev] {message}", file=sys.stderr, flush=True)


def _load() -> ControlPlane | None:
    return ControlPlane.load(_state_file()) if _state_file().is_file() else None


def up() -> int:
    existing = _load()
    if existing is not None:
        if all(existing.running().values()):
            _say("already running")
            print(f"export KUBECONFIG={existing.kubeconfig}")
            return 0
        _say("a previous control plane is partly down: stopping what is left of it")
        down()
    home = dev_home()
    try:
        root = source_root()
        _say("looking for control-plane binaries (the first build takes several minutes)")
        binaries = find_binaries()
        cp = controlplane.start(
            home,
            binaries,
            root / "tests" / "cluster" / "kwok" / "stages.yaml",
            log=_say,
            crds=root / "crds",
        )
    except (BinariesUnavailable, ControlPlaneError) as e:
        _say(f"failed: {e}")
        return 1
    cp.save(_state_file())
    try:
        # The examples' PVC binds to this volume (there is no storage provisioner).
        pv = build_static_pv("default", EXAMPLE_CLAIM)
        cp.kubectl("apply", "-f", "-", input=json.dumps(pv))
        _say("starting the operator")
        proc = start_operator(
            cp.kubeconfig, http_port=controlplane.free_port(), log_path=home / "operator.log"
        )
        cp.pids[OPERATOR] = proc.pid
        cp.save(_state_file())
        _say("applying examples/")
        cp.kubectl("apply", "-f", str(root / "examples"))
        _wait_for_phases(cp)
    except (ControlPlaneError, OperatorNotHealthy) as e:
        _say(f"failed: {e}")
        down()
        return 1
    print(cp.kubectl("get", "kubetune").stdout, file=sys.stderr)
    _say(f"ready; logs in {home}; kubectl is {cp.kubectl_path}. To use it:")
    print(f"export KUBECONFIG={cp.kubeconfig}")
    return 0


def _wait_for_phases(cp: ControlPlane, timeout: float = 60) -> None:
    """Until the operator has set a phase on every example resource."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = json.loads(cp.kubectl("get", "kubetune", "-o", "json").stdout)["items"]
        if items and all(i.get("status", {}).get("phase") for i in items):
            return
        time.sleep(0.5)
    raise ControlPlaneError(f"the operator set no phase on the examples in {timeout:.0f}s")


def status() -> int:
    cp = _load()
    if cp is None:
        print("not running (start it with `kubetune dev up`)")
        return 3
    running = cp.running()
    for name, alive in running.items():
        print(f"{name:<24} pid {cp.pids[name]:<8} {'running' if alive else 'STOPPED'}")
    print(f"api server: {cp.server}")
    print(f"kubectl:    {cp.kubectl_path}")
    print(f"export KUBECONFIG={cp.kubeconfig}")
    if running.get("kube-apiserver"):
        print(cp.kubectl("get", "kubetune", check=False).stdout, end="")
    return 0 if all(running.values()) else 1


def down() -> int:
    cp = _load()
    if cp is None:
        _say("nothing to stop")
        return 0
    controlplane.stop(cp)
    left = [name for name, alive in cp.running().items() if alive]
    if left:
        _say(f"still running: {', '.join(left)}")
        return 1
    shutil.rmtree(dev_home(), ignore_errors=True)
    _say("stopped")
    return 0
