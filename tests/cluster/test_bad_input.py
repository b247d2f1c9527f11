"""Bad input the API server admits: references to what does not exist or cannot be used
(tests/manifests/failing/), and continuing from a FineTunedModel (baseModel: model://).
Nothing is left stuck: the resource fails naming the field, or waits saying what for."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kubetune.api.trainerconfig import TrainerConfig
from kubetune.backends.local.manifests import CONFIG_ANNOTATION, FINETUNEJOB_LABEL
from tests.factories import corpus_headers, make_finetunejob, make_model
from tests.kube import ROOT, OperatorProcess, apply, end_pod, get, running_pod, wait_for

pytestmark = pytest.mark.cluster

FAILING = sorted((ROOT / "tests" / "manifests" / "failing").glob("*.yaml"))
PHI3 = "microsoft/Phi-3-mini-4k-instruct"
KINDS = {"FineTuneJob": "ftj", "FineTunedModel": "ftm", "ModelDeployment": "mdep"}


def target(path: Path) -> str:
    """`kind/name` of the object a failing manifest's header is about."""
    if "object" in corpus_headers(path):
        return corpus_headers(path)["object"]
    last = list(yaml.safe_load_all(path.read_text()))[-1]
    return f"{KINDS[last['kind']]}/{last['metadata']['name']}"


@pytest.fixture
def quick_operator(cluster, namespace, tmp_path) -> Iterator[OperatorProcess]:
    """The operator, waiting only 3 s for a missing dataset ConfigMap."""
    op = OperatorProcess(
        cluster, tmp_path / "operator.log", ("--namespace", namespace, "--reference-timeout=3")
    )
    op.start()
    try:
        yield op
    finally:
        op.stop()


def status_of(cluster, namespace, ref: str) -> dict:
    return (get(cluster, ref, "-n", namespace) or {}).get("status") or {}


def condition(status: dict, type_: str) -> dict | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)


@pytest.mark.parametrize("path", FAILING, ids=lambda p: p.stem)
def test_admitted_but_unusable_input_is_reported(cluster, namespace, quick_operator, path):
    want = corpus_headers(path)
    ctype, _, text = want["condition"].partition(": ")
    ref = target(path)
    done = apply(cluster, path.read_text(), namespace)
    assert done.returncode == 0, f"{path.name} must be admitted: {done.stderr}"
    status = wait_for(
        f"{ref} {want['phase']} with a {ctype} condition",
        lambda: (
            (s := status_of(cluster, namespace, ref)).get("phase") == want["phase"]
            and condition(s, ctype)
            and s
        ),
        timeout=60,
    )
    cond = condition(status, ctype)
    assert cond is not None
    assert text in cond["message"], f"{path.name}: {ctype} says {cond['message']!r}"
    if ref.startswith("ftj/"):
        # Found before any training Job: none was created.
        name = ref.removeprefix("ftj/")
        jobs = get(cluster, "jobs", "-n", namespace, "-l", f"{FINETUNEJOB_LABEL}={name}")
        assert jobs["items"] == [], f"{path.name} created a training Job"


def test_job_waiting_for_its_base_model_starts_once_it_is_ready(
    cluster, namespace, quick_operator, training_data, output_pvc
):
    apply(cluster, make_finetunejob("more", baseModel="model://first"), namespace)
    status = wait_for(
        "the job waiting for model://first",
        lambda: condition(s := status_of(cluster, namespace, "ftj/more"), "InputsReady") and s,
    )
    assert status["phase"] == "Pending"
    cond = condition(status, "InputsReady")
    assert cond["status"] == "False"
    assert cond["reason"] == "BaseModelNotFound"
    assert get(cluster, "job", "more", "-n", namespace) is None

    apply(cluster, make_model("first"), namespace)
    job = wait_for(
        "the training Job once model first exists",
        lambda: get(cluster, "job", "more", "-n", namespace),
        timeout=60,
    )
    status = status_of(cluster, namespace, "ftj/more")
    assert condition(status, "InputsReady")["status"] == "True"
    assert status["resolvedBaseModel"] == PHI3
    config = TrainerConfig.model_validate_json(
        job["spec"]["template"]["metadata"]["annotations"][CONFIG_ANNOTATION]
    )
    assert config.adapter_path is not None


def test_continuing_job_trains_the_models_adapter_and_registers_on_the_same_base(
    cluster, namespace, quick_operator, training_data, output_pvc
):
    apply(cluster, make_model("xbox-v1"), namespace)
    wait_for(
        "model xbox-v1 Ready",
        lambda: status_of(cluster, namespace, "ftm/xbox-v1").get("phase") == "Ready",
    )
    apply(
        cluster,
        make_finetunejob("xbox-v2", baseModel="model://xbox-v1", hyperparameters={"epochs": 1}),
        namespace,
    )
    job = wait_for("the training Job", lambda: get(cluster, "job", "xbox-v2", "-n", namespace))
    template = job["spec"]["template"]
    config = TrainerConfig.model_validate_json(
        template["metadata"]["annotations"][CONFIG_ANNOTATION]
    )
    # The model's adapter is on the output claim: read through the output mount.
    assert config.adapter_path == "/output/adapters/xbox-v1"
    assert config.output_dir == "/output/adapters/xbox-v2"
    assert config.base_model_id == PHI3
    assert config.base_model_path is None
    assert config.spec.base_model == "model://xbox-v1"
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in template["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [output_pvc]

    end_pod(cluster, namespace, running_pod(cluster, namespace, "xbox-v2"), 0)
    model = wait_for("model xbox-v2", lambda: get(cluster, "ftm", "xbox-v2", "-n", namespace))
    # The new adapter applies to the base model itself, not to model://xbox-v1.
    assert model["spec"]["baseModel"] == PHI3
    assert model["spec"]["source"] == {"pvc": {"claimName": output_pvc, "path": "adapters/xbox-v2"}}
    assert model["spec"]["sourceJob"] == "xbox-v2"
    status = status_of(cluster, namespace, "ftj/xbox-v2")
    assert status["phase"] == "Succeeded"
    assert status["resolvedBaseModel"] == PHI3
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)[
        "items"
    ]
    assert not [e for e in events if e["type"] == "Warning" and "xbox-v2" in e["message"]]
