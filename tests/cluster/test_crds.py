"""The CRDs on a real API server: examples apply, invalid specs are rejected at
apply time with a message naming the problem, kubectl shows what users need."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.kube import ROOT, apply

pytestmark = pytest.mark.cluster

INVALID = sorted((ROOT / "tests" / "manifests" / "invalid").glob("*.yaml"))


def expected_message(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


def test_examples_apply(cluster, namespace):
    done = cluster.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples"), check=False)
    assert done.returncode == 0, done.stderr
    names = json.loads(cluster.kubectl("get", "kubetune", "-n", namespace, "-o", "json").stdout)
    kinds = {i["kind"] for i in names["items"]}
    assert kinds == {"FineTuneJob", "ModelDeployment"}


def test_at_least_eight_invalid_manifests():
    assert len(INVALID) >= 8


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_is_rejected_with_its_reason(cluster, namespace, path):
    done = apply(cluster, path.read_text(), namespace)
    assert done.returncode != 0, f"{path.name} was accepted"
    assert expected_message(path) in done.stderr
    kind = yaml.safe_load(path.read_text())["kind"].lower()
    assert cluster.kubectl("get", kind, "-n", namespace, "-o", "name").stdout == ""


FTJ = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "immutable"},
    "spec": {
        "baseModel": "microsoft/Phi-3-mini-4k-instruct",
        "dataset": {"training": {"configMap": {"name": "d", "key": "train.jsonl"}}},
    },
}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        pytest.param(
            {
                "backend": "foundry",
                "workspace": {"subscriptionId": "s", "resourceGroup": "r", "name": "w"},
            },
            "backend is immutable",
            id="backend",
        ),
        pytest.param(
            {"baseModel": "microsoft/Phi-3-medium-4k-instruct"},
            "baseModel is immutable",
            id="baseModel",
        ),
        pytest.param(
            {"dataset": {"training": {"url": "https://example.invalid/t.jsonl"}}},
            "dataset is immutable",
            id="dataset",
        ),
    ],
)
def test_finetunejob_fields_are_immutable(cluster, namespace, patch, message):
    assert apply(cluster, FTJ, namespace).returncode == 0
    done = cluster.kubectl(
        "patch",
        "ftj",
        "immutable",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": patch}),
        check=False,
    )
    assert done.returncode != 0
    assert message in done.stderr
    # Mutable fields still change.
    ok = cluster.kubectl(
        "patch",
        "ftj",
        "immutable",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"suspend": True}}),
        check=False,
    )
    assert ok.returncode == 0, ok.stderr


def test_deployment_model_ref_is_immutable(cluster, namespace):
    mdep = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "d"},
        "spec": {"modelRef": {"name": "a"}},
    }
    assert apply(cluster, mdep, namespace).returncode == 0
    done = cluster.kubectl(
        "patch",
        "mdep",
        "d",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"modelRef": {"name": "b"}}}',
        check=False,
    )
    assert done.returncode != 0
    assert "modelRef is immutable" in done.stderr


def test_get_kubetune_lists_all_three_kinds(cluster, namespace):
    model = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTunedModel",
        "metadata": {"name": "m"},
        "spec": {
            "baseModel": "microsoft/Phi-3-mini-4k-instruct",
            "source": {"pvc": {"claimName": "models", "path": "m"}},
        },
    }
    assert apply(cluster, model, namespace).returncode == 0
    cluster.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples"))
    out = cluster.kubectl("get", "kubetune", "-n", namespace).stdout
    for resource in (
        "finetunejob.kubetune.io/xbox-support",
        "finetunedmodel.kubetune.io/m",
        "modeldeployment.kubetune.io/xbox-support",
    ):
        assert resource in out
    for short in ("ftj", "ftm", "mdep"):
        assert cluster.kubectl("get", short, "-n", namespace).returncode == 0


def test_printer_columns(cluster, namespace):
    cluster.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples"))
    header = cluster.kubectl("get", "ftj", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "BACKEND", "PHASE", "PROGRESS", "MODEL", "AGE"]
    header = cluster.kubectl("get", "mdep", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "MODEL", "BACKEND", "PHASE", "READY", "ENDPOINT", "AGE"]


def test_explain_shows_descriptions(cluster):
    out = cluster.kubectl("explain", "finetunejob.spec").stdout
    assert "The desired fine-tuning run." in out
    assert "local: training pods on this cluster's GPU nodes" in out
    out = cluster.kubectl("explain", "ftj.spec.hyperparameters").stdout
    assert "Multiplier of the base model's default learning rate" in out


def test_defaults_are_applied_by_the_api_server(cluster, namespace):
    assert apply(cluster, FTJ, namespace).returncode == 0
    spec = json.loads(
        cluster.kubectl("get", "ftj", "immutable", "-n", namespace, "-o", "json").stdout
    )["spec"]
    assert spec["backend"] == "local"
    assert spec["quantization"] == "none"
    assert spec["suspend"] is False
