"""The Helm chart renders with the real helm binary and keeps its security promises."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.kube import ROOT

pytestmark = pytest.mark.e2e

CHART = ROOT / "charts" / "kubetune"


@pytest.fixture
def helm(binaries):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(binaries["helm"]), *args], capture_output=True, text=True)

    return run


def test_lint_strict(helm):
    done = helm("lint", "--strict", str(CHART))
    assert done.returncode == 0, done.stdout + done.stderr


def test_template_renders_a_restricted_operator(helm):
    done = helm(
        "template",
        "kt",
        str(CHART),
        "--namespace",
        "kubetune-system",
        "--set",
        "watchNamespaces={team-a,team-b}",
    )
    assert done.returncode == 0, done.stderr
    objects = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(done.stdout) if o}
    deployment = objects[("Deployment", "kt-operator")]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--namespace=team-a" in container["args"]
    assert "--namespace=team-b" in container["args"]
    binding = objects[("ClusterRoleBinding", "kt-operator")]
    assert binding["subjects"][0] == {
        "kind": "ServiceAccount",
        "name": "kt-operator",
        "namespace": "kubetune-system",
    }
