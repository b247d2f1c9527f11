"""Shared fixtures. The `cluster` fixture is one real control plane per session
(etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, built from
Go modules by tests/cluster/build.sh), with kubetune's CRDs installed; `operator`
runs `kubetune run` against it as its own process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetune.localcluster import controlplane
from kubetune.localcluster.binaries import find_binaries
from kubetune.localcluster.controlplane import ControlPlane
from tests.kube import KWOK_STAGES, ROOT, OperatorProcess


@pytest.fixture(scope="session")
def binaries() -> dict[str, Path]:
    """The control plane's binaries (built from tests/cluster/ on first use)."""
    return find_binaries()


@pytest.fixture(scope="session")
def cluster(
    binaries: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    workdir = tmp_path_factory.mktemp("control-plane")
    cp = controlplane.start(workdir, binaries, KWOK_STAGES, log=print)
    try:
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "-l",
            "app.kubernetes.io/part-of=kubetune",
        )
        yield cp
    finally:
        controlplane.stop(cp)


@pytest.fixture(scope="session")
def operator(
    cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(cluster, tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def namespace(cluster: ControlPlane) -> Iterator[str]:
    """A fresh namespace per test, enforcing the restricted Pod Security Standard."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")
