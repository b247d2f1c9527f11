"""Shared fixtures. The `cluster` fixture is one real control plane per session
(etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, built from
Go modules by tests/cluster/build.sh), with kubetune's CRDs installed; `operator`
runs `kubetune run` against it as its own process."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetune.localcluster import controlplane
from kubetune.localcluster.binaries import find_binaries
from kubetune.localcluster.controlplane import ControlPlane
from kubetune.localcluster.storage import build_static_pv
from tests.factories import OUTPUT_CLAIM
from tests.kube import KWOK_STAGES, ROOT, OperatorProcess
from tests.secretscan import no_leaked_secrets  # noqa: F401  (autouse, for every test)


@pytest.fixture(scope="session")
def binaries() -> dict[str, Path]:
    """The control plane's binaries (built from tests/cluster/ on first use)."""
    return find_binaries()


@pytest.fixture(scope="session")
def cluster(
    binaries: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    workdir = tmp_path_factory.mktemp("control-plane")
    cp = controlplane.start(workdir, binaries, KWOK_STAGES, log=print, crds=ROOT / "crds")
    try:
        yield cp
    finally:
        controlplane.stop(cp)


@pytest.fixture
def namespace(cluster: ControlPlane) -> Iterator[str]:
    """A fresh namespace per test, enforcing the restricted Pod Security Standard."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def operator(cluster: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator as its own process, watching only the test's namespace."""
    op = OperatorProcess(cluster, tmp_path / "operator.log", ("--namespace", namespace))
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def training_data(cluster: ControlPlane, namespace: str) -> str:
    """The Xbox examples as a ConfigMap; returns its name."""
    cluster.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "00-xbox-data.yaml"))
    return "xbox-support-data"


@pytest.fixture
def output_volume(cluster: ControlPlane, namespace: str) -> Iterator[str]:
    """A PersistentVolume that the namespace's PVC `kubetune-models` binds to."""
    pv = build_static_pv(namespace, OUTPUT_CLAIM)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pv))
    yield OUTPUT_CLAIM
    cluster.kubectl("delete", "pv", pv["metadata"]["name"], "--wait=false", check=False)


@pytest.fixture
def output_pvc(cluster: ControlPlane, namespace: str, output_volume: str) -> str:
    """The bound PVC `kubetune-models` that jobs write their adapters to."""
    cluster.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "01-output-pvc.yaml"))
    cluster.kubectl(
        "wait",
        "-n",
        namespace,
        "--for=jsonpath={.status.phase}=Bound",
        "--timeout=30s",
        f"pvc/{output_volume}",
    )
    return output_volume


@pytest.fixture(scope="module")
def peering_crds(cluster: ControlPlane, binaries: dict[str, Path]) -> None:
    """Kopf's peering CRDs, as the chart installs them for replicas > 1."""
    rendered = subprocess.run(
        [
            str(binaries["helm"]),
            "template",
            "kt",
            str(ROOT / "charts" / "kubetune"),
            "--set",
            "replicas=2",
            "--show-only",
            "templates/peering.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cluster.kubectl("apply", "-f", "-", input=rendered)
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/kopfpeerings.kopf.dev",
        "crd/clusterkopfpeerings.kopf.dev",
    )
