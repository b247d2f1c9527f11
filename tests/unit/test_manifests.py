"""Objects of the local backend (backends/local/manifests.py), compared as plain dicts."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from kubetune.api.common import PvcSource
from kubetune.api.finetunedmodel import FineTunedModelSpec
from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.modeldeployment import ModelDeploymentSpec
from kubetune.api.trainerconfig import TrainerConfig
from kubetune.backends.local.manifests import (
    CONFIG_ANNOTATION,
    DEPLOYMENT_LABEL,
    build_cleanup_job,
    build_finetuned_model,
    build_serving_deployment,
    build_serving_service,
    build_training_job,
    output_location,
    parse_pvc_uri,
)
from kubetune.datavalidation import BAD_INPUT_EXIT_CODE
from kubetune.errors import InvalidSpec
from kubetune.settings import LocalSettings
from kubetune.trainer.errors import UNSUPPORTED_EXIT_CODE

SETTINGS = LocalSettings()
NS = "team-a"
PHI3 = "microsoft/Phi-3-mini-4k-instruct"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
MANAGED_BY = {"app.kubernetes.io/managed-by": "kubetune", "app.kubernetes.io/part-of": "kubetune"}
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
CM_TRAINING = {"configMap": {"name": "xbox-support-data", "key": "train.jsonl"}}
JOB_SPEC: dict[str, Any] = {
    "baseModel": PHI3,
    "dataset": {"training": CM_TRAINING, "validationSplit": 0.1},
    "resources": {"gpus": 1},
    "output": {"pvc": {"claimName": "kubetune-models", "path": "adapters"}},
}


def make_spec(**fields: Any) -> FineTuneJobSpec:
    """A FineTuneJob spec; top-level camelCase fields replace the defaults (None removes)."""
    merged = {**JOB_SPEC, **fields}
    return FineTuneJobSpec.model_validate({k: v for k, v in merged.items() if v is not None})


def make_job(
    spec: FineTuneJobSpec | None = None,
    *,
    labels: dict[str, str] | None = None,
    settings: LocalSettings = SETTINGS,
) -> dict:
    return build_training_job(
        name="xbox",
        namespace=NS,
        uid="uid-ftj",
        labels=labels or {},
        spec=spec or make_spec(),
        settings=settings,
    )


def pod_spec(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]


def trainer(job: dict) -> dict:
    (container,) = pod_spec(job)["containers"]
    return container


def config_of(job: dict) -> TrainerConfig:
    annotation = job["spec"]["template"]["metadata"]["annotations"][CONFIG_ANNOTATION]
    return TrainerConfig.model_validate_json(annotation)


def volumes(manifest: dict) -> dict[str, dict]:
    return {v["name"]: v for v in pod_spec(manifest)["volumes"]}


def mounts(manifest: dict) -> dict[str, dict]:
    (container,) = pod_spec(manifest)["containers"]
    return {m["name"]: m for m in container["volumeMounts"]}


def make_model(
    base_model: str = PHI3, source: dict | None = None, **fields: Any
) -> FineTunedModelSpec:
    return FineTunedModelSpec.model_validate(
        {
            "baseModel": base_model,
            "source": source or {"pvc": {"claimName": "kubetune-models", "path": "adapters/xbox"}},
            **fields,
        }
    )


def make_serving(local: dict | None = None, model: FineTunedModelSpec | None = None) -> dict:
    spec: dict[str, Any] = {"modelRef": {"name": "xbox"}}
    if local is not None:
        spec["local"] = local
    return build_serving_deployment(
        name="chat",
        namespace=NS,
        uid="uid-mdep",
        spec=ModelDeploymentSpec.model_validate(spec),
        model_name="xbox",
        model=model or make_model(),
        settings=SETTINGS,
    )


def make_cleanup(path: str = "adapters/xbox") -> dict:
    return build_cleanup_job(
        name="xbox",
        namespace=NS,
        uid="uid-ftm",
        source=PvcSource(claim_name="kubetune-models", path=path),
        settings=SETTINGS,
    )


# --- pod security ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(make_job, id="training-job"),
        pytest.param(lambda: make_job(make_spec(resources={"gpus": 0})), id="training-cpu"),
        pytest.param(make_serving, id="serving-vllm"),
        pytest.param(lambda: make_serving({"runtime": "kubetune"}), id="serving-kubetune"),
        pytest.param(make_cleanup, id="cleanup-job"),
    ],
)
def test_every_pod_is_restricted(build: Callable[[], dict]):
    spec = pod_spec(build())
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["containers"]
    for container in spec["containers"]:
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }
    allowed = {"configMap", "downwardAPI", "emptyDir", "persistentVolumeClaim", "projected"}
    for volume in spec.get("volumes", []):
        assert set(volume) - {"name"} <= allowed, volume


# --- training Job: compute ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resources", "want_resources", "want_tolerations", "want_nproc"),
    [
        pytest.param(
            {"gpus": 0, "cpu": "4", "memory": "16Gi"},
            {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "16Gi"}},
            [],
            1,
            id="cpu-only",
        ),
        pytest.param(
            {"gpus": 1},
            {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}},
            [GPU_TOLERATION],
            1,
            id="one-gpu",
        ),
        pytest.param(
            {"gpus": 4, "memory": "64Gi"},
            {
                "requests": {"nvidia.com/gpu": "4", "memory": "64Gi"},
                "limits": {"nvidia.com/gpu": "4", "memory": "64Gi"},
            },
            [GPU_TOLERATION],
            4,
            id="four-gpus",
        ),
        pytest.param(
            None,
            {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}},
            [GPU_TOLERATION],
            1,
            id="default-one-gpu",
        ),
    ],
)
def test_training_compute(
    resources: dict | None, want_resources: dict, want_tolerations: list, want_nproc: int
):
    job = make_job(make_spec(resources=resources))
    assert trainer(job)["resources"] == want_resources
    assert pod_spec(job)["tolerations"] == want_tolerations
    assert trainer(job)["command"][-1] == f"--nproc-per-node={want_nproc}"
    assert config_of(job).processes == want_nproc


def test_custom_gpu_resource_is_requested_and_tolerated():
    job = make_job(
        make_spec(resources={"gpus": 2}), settings=LocalSettings(gpu_resource="amd.com/gpu")
    )
    assert trainer(job)["resources"] == {
        "requests": {"amd.com/gpu": "2"},
        "limits": {"amd.com/gpu": "2"},
    }
    assert pod_spec(job)["tolerations"] == [
        {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_extra_tolerations_follow_the_gpu_one():
    extra = {"key": "team", "operator": "Equal", "value": "a", "effect": "NoExecute"}
    job = make_job(make_spec(tolerations=[extra]))
    assert pod_spec(job)["tolerations"] == [GPU_TOLERATION, extra]


def test_trainer_command_image_and_scheduling():
    job = make_job(
        make_spec(
            nodeSelector={"pool": "a100"},
            priorityClassName="batch-low",
            image="registry.local/trainer:dev",
        )
    )
    assert trainer(job)["command"] == [
        "python",
        "-m",
        "kubetune.trainer",
        "--config",
        "/etc/kubetune/config.json",
        "--nproc-per-node=1",
    ]
    assert trainer(job)["image"] == "registry.local/trainer:dev"
    assert pod_spec(job)["nodeSelector"] == {"pool": "a100"}
    assert pod_spec(job)["priorityClassName"] == "batch-low"
    assert pod_spec(job)["restartPolicy"] == "Never"


def test_trainer_defaults_to_the_settings_image_without_scheduling_fields():
    job = make_job()
    assert trainer(job)["image"] == "ghcr.io/kubetune/kubetune-trainer:0.1.0"
    assert "nodeSelector" not in pod_spec(job)
    assert "priorityClassName" not in pod_spec(job)


# --- training Job: data, base model, output, config -----------------------------------------


@pytest.mark.parametrize(
    ("dataset", "want_volumes", "want_training", "want_validation"),
    [
        pytest.param(
            {"training": CM_TRAINING},
            {
                "training": {
                    "name": "training",
                    "configMap": {
                        "name": "xbox-support-data",
                        "items": [{"key": "train.jsonl", "path": "train.jsonl"}],
                    },
                }
            },
            "/data/training/train.jsonl",
            None,
            id="configmap",
        ),
        pytest.param(
            {
                "training": {"pvc": {"claimName": "datasets", "path": "xbox/train.jsonl"}},
                "validation": {"configMap": {"name": "xbox-val", "key": "val.jsonl"}},
            },
            {
                "training": {
                    "name": "training",
                    "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True},
                },
                "validation": {
                    "name": "validation",
                    "configMap": {
                        "name": "xbox-val",
                        "items": [{"key": "val.jsonl", "path": "validation.jsonl"}],
                    },
                },
            },
            "/data/training/xbox/train.jsonl",
            "/data/validation/validation.jsonl",
            id="pvc-and-configmap-validation",
        ),
        pytest.param(
            {"training": {"url": "https://example.com/train.jsonl"}},
            {},
            None,
            None,
            id="url",
        ),
        pytest.param(
            {
                "training": {
                    "azureBlob": {
                        "accountUrl": "https://acct.blob.core.windows.net",
                        "container": "data",
                        "blob": "xbox/train.jsonl",
                    }
                },
                "validation": {"url": "https://example.com/val.jsonl"},
            },
            {},
            None,
            None,
            id="azure-blob",
        ),
    ],
)
def test_dataset_mounts_and_config_paths(
    dataset: dict,
    want_volumes: dict,
    want_training: str | None,
    want_validation: str | None,
):
    job = make_job(make_spec(dataset=dataset))
    data_volumes = {k: v for k, v in volumes(job).items() if k in ("training", "validation")}
    assert data_volumes == want_volumes
    for name in want_volumes:
        assert mounts(job)[name] == {"name": name, "mountPath": f"/data/{name}", "readOnly": True}
    assert (config_of(job).training_path, config_of(job).validation_path) == (
        want_training,
        want_validation,
    )


def test_pvc_base_model_is_mounted_read_only():
    job = make_job(make_spec(baseModel="pvc://base-models/phi-3/mini"))
    assert volumes(job)["base-model"] == {
        "name": "base-model",
        "persistentVolumeClaim": {"claimName": "base-models", "readOnly": True},
    }
    assert mounts(job)["base-model"] == {
        "name": "base-model",
        "mountPath": "/models/base",
        "readOnly": True,
    }
    assert config_of(job).base_model_path == "/models/base/phi-3/mini"


def test_hub_base_model_is_not_mounted():
    job = make_job()
    assert "base-model" not in volumes(job)
    assert config_of(job).base_model_path is None
    assert config_of(job).spec.base_model == PHI3


@pytest.mark.parametrize(
    ("uri", "want"),
    [
        pytest.param(
            "pvc://claim/dir/sub", PvcSource(claim_name="claim", path="dir/sub"), id="path"
        ),
        pytest.param("pvc://claim", PvcSource(claim_name="claim", path=""), id="root"),
        pytest.param("pvc://claim/", PvcSource(claim_name="claim", path=""), id="root-slash"),
        pytest.param(PHI3, None, id="hub-id"),
        pytest.param("model://xbox", None, id="model-ref"),
    ],
)
def test_parse_pvc_uri(uri: str, want: PvcSource | None):
    assert parse_pvc_uri(uri) == want


@pytest.mark.parametrize("uri", ["pvc://", "pvc:///models/phi3"])
def test_invalid_pvc_uri(uri: str):
    with pytest.raises(InvalidSpec, match="expected pvc://<claim>/<path>"):
        parse_pvc_uri(uri)
    with pytest.raises(InvalidSpec):
        make_job(make_spec(baseModel=uri))


@pytest.mark.parametrize(
    ("output", "default_pvc", "want"),
    [
        pytest.param(
            {"pvc": {"claimName": "kubetune-models", "path": "adapters"}},
            "shared-models",
            PvcSource(claim_name="kubetune-models", path="adapters/xbox"),
            id="spec-output-wins",
        ),
        pytest.param(
            {"pvc": {"claimName": "kubetune-models"}},
            None,
            PvcSource(claim_name="kubetune-models", path="xbox"),
            id="spec-output-root",
        ),
        pytest.param(
            None, "shared-models", PvcSource(claim_name="shared-models", path="xbox"), id="default"
        ),
    ],
)
def test_output_location(output: dict | None, default_pvc: str | None, want: PvcSource):
    settings = LocalSettings(default_output_pvc=default_pvc)
    assert output_location(make_spec(output=output), "xbox", settings) == want


def test_output_is_required_without_a_default():
    with pytest.raises(InvalidSpec, match=r"spec\.output is required"):
        output_location(make_spec(output=None), "xbox", SETTINGS)
    with pytest.raises(InvalidSpec, match=r"spec\.output"):
        make_job(make_spec(output=None))


@pytest.mark.parametrize(
    ("output", "settings", "want_claim", "want_dir"),
    [
        pytest.param(
            {"pvc": {"claimName": "kubetune-models", "path": "adapters"}},
            SETTINGS,
            "kubetune-models",
            "/output/adapters/xbox",
            id="spec-output",
        ),
        pytest.param(
            None,
            LocalSettings(default_output_pvc="shared-models"),
            "shared-models",
            "/output/xbox",
            id="default-output",
        ),
    ],
)
def test_output_is_mounted_writable(
    output: dict | None, settings: LocalSettings, want_claim: str, want_dir: str
):
    job = make_job(make_spec(output=output), settings=settings)
    assert volumes(job)["output"] == {
        "name": "output",
        "persistentVolumeClaim": {"claimName": want_claim, "readOnly": False},
    }
    assert mounts(job)["output"] == {"name": "output", "mountPath": "/output", "readOnly": False}
    assert config_of(job).output_dir == want_dir


def test_absolute_output_path_stays_inside_the_mount():
    job = make_job(make_spec(output={"pvc": {"claimName": "kubetune-models", "path": "/adapters"}}))
    assert config_of(job).output_dir == "/output/adapters/xbox"


@pytest.mark.parametrize(
    "output",
    [
        pytest.param({"pvc": {"claimName": "m", "path": "../escape"}}, id="output-parent"),
        pytest.param({"pvc": {"claimName": "m", "path": "a/../../b"}}, id="output-nested-parent"),
    ],
)
def test_paths_that_leave_the_volume_are_refused(output):
    with pytest.raises(InvalidSpec, match="must stay inside its volume"):
        make_job(make_spec(output=output))


def test_dataset_path_with_a_leading_slash_is_on_the_volume():
    spec = make_spec(dataset={"training": {"pvc": {"claimName": "data", "path": "/train.jsonl"}}})
    assert config_of(make_job(spec)).training_path == "/data/training/train.jsonl"


def test_trainer_config_annotation():
    spec = make_spec()
    job = make_job(spec)
    config = config_of(job)
    assert config.spec == spec
    assert (config.name, config.namespace) == ("xbox", NS)
    assert config.progress_url == (
        "http://kubetune-operator.kubetune-system.svc:8080/v1/namespaces/team-a/finetunejobs/xbox/report"
    )
    assert config.token_path == "/var/run/secrets/kubetune/token"
    assert volumes(job)["config"]["downwardAPI"]["items"] == [
        {
            "path": "config.json",
            "fieldRef": {"fieldPath": f"metadata.annotations['{CONFIG_ANNOTATION}']"},
        }
    ]
    assert volumes(job)["progress-token"]["projected"]["sources"] == [
        {
            "serviceAccountToken": {
                "audience": "kubetune",
                "expirationSeconds": 3600,
                "path": "token",
            }
        }
    ]


# --- training Job: labels, suspension, failure policy ---------------------------------------


def training_labels(**extra: str) -> dict[str, str]:
    return {
        **MANAGED_BY,
        "app.kubernetes.io/name": "kubetune-trainer",
        "app.kubernetes.io/instance": "xbox",
        "app.kubernetes.io/component": "training",
        "kubetune.io/finetunejob": "xbox",
        **extra,
    }


@pytest.mark.parametrize(
    ("labels", "spec_suspend", "want_labels", "want_suspend"),
    [
        pytest.param(
            {QUEUE_LABEL: "gpu-queue", "team": "a", "app.kubernetes.io/name": "mine"},
            False,
            training_labels(**{QUEUE_LABEL: "gpu-queue"}),
            True,
            id="kueue-label-forces-suspend",
        ),
        pytest.param(
            {"team": "a", "kueue.example.com/queue": "x"},
            False,
            training_labels(),
            False,
            id="other-labels-dropped",
        ),
        pytest.param({}, True, training_labels(), True, id="spec-suspend"),
        pytest.param({}, False, training_labels(), False, id="plain"),
    ],
)
def test_labels_and_suspend(
    labels: dict[str, str], spec_suspend: bool, want_labels: dict[str, str], want_suspend: bool
):
    job = make_job(make_spec(suspend=spec_suspend), labels=labels)
    assert job["metadata"]["labels"] == want_labels
    assert job["spec"]["template"]["metadata"]["labels"] == want_labels
    assert job["spec"]["suspend"] is want_suspend


def test_job_metadata_and_owner():
    job = make_job()
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert (job["metadata"]["name"], job["metadata"]["namespace"]) == ("xbox", NS)
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "kubetune.io/v1alpha1",
            "kind": "FineTuneJob",
            "name": "xbox",
            "uid": "uid-ftj",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_pod_failure_policy():
    job = make_job(make_spec(backoffLimit=5))
    assert job["spec"]["backoffLimit"] == 5
    assert job["spec"]["podFailurePolicy"] == {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": "trainer",
                    "operator": "In",
                    "values": [BAD_INPUT_EXIT_CODE, UNSUPPORTED_EXIT_CODE],
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }
    assert BAD_INPUT_EXIT_CODE == 65


@pytest.mark.parametrize(
    ("deadline", "want"),
    [pytest.param(None, None, id="unset"), pytest.param(7200, 7200, id="set")],
)
def test_active_deadline_seconds(deadline: int | None, want: int | None):
    job = make_job(make_spec(activeDeadlineSeconds=deadline))
    assert job["spec"].get("activeDeadlineSeconds") == want
    assert ("activeDeadlineSeconds" in job["spec"]) is (want is not None)


# --- continuing from a FineTunedModel (baseModel: model://...) -----------------------------


def earlier_model(**fields: Any) -> FineTunedModelSpec:
    spec: dict[str, Any] = {
        "baseModel": PHI3,
        "source": {"pvc": {"claimName": "kubetune-models", "path": "adapters/xbox-v1"}},
        "sourceJob": "xbox-v1",
    }
    return FineTunedModelSpec.model_validate({**spec, **fields})


def continue_job(model: FineTunedModelSpec | None, **fields: Any) -> dict:
    return build_training_job(
        name="xbox",
        namespace=NS,
        uid="uid-ftj",
        labels={},
        spec=make_spec(baseModel="model://xbox-v1", **fields),
        settings=SETTINGS,
        continue_from=model,
    )


def test_continuing_on_the_output_claim_reads_the_adapter_through_the_output_mount():
    job = continue_job(earlier_model())
    config = config_of(job)
    assert config.adapter_path == "/output/adapters/xbox-v1"
    assert config.output_dir == "/output/adapters/xbox"
    assert config.base_model_id == PHI3
    assert config.base_model_path is None
    assert config.spec.base_model == "model://xbox-v1"
    # One volume per claim: no second (read-only) mount of the output claim.
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod_spec(job)["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["kubetune-models"]


def test_continuing_from_another_claim_mounts_the_adapter_read_only():
    job = continue_job(
        earlier_model(source={"pvc": {"claimName": "shared-adapters", "path": "/team/v1"}})
    )
    assert volumes(job)["adapter"] == {
        "name": "adapter",
        "persistentVolumeClaim": {"claimName": "shared-adapters", "readOnly": True},
    }
    assert mounts(job)["adapter"] == {
        "name": "adapter",
        "mountPath": "/models/adapter",
        "readOnly": True,
    }
    assert config_of(job).adapter_path == "/models/adapter/team/v1"


def test_continuing_from_a_model_over_a_pvc_base_mounts_that_base():
    job = continue_job(earlier_model(baseModel="pvc://base-models/phi-3"))
    config = config_of(job)
    assert config.base_model_path == "/models/base/phi-3"
    assert config.base_model_id is None
    assert volumes(job)["base-model"]["persistentVolumeClaim"]["claimName"] == "base-models"


def test_plain_job_has_no_adapter_to_continue():
    config = config_of(make_job())
    assert (config.adapter_path, config.base_model_id) == (None, None)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        pytest.param(None, "spec.baseModel: model://xbox-v1 was not resolved", id="unresolved"),
        pytest.param(
            earlier_model(source={"azureModelId": "azureml://locations/l/models/m/versions/1"}),
            "spec.baseModel: model://xbox-v1 is not an adapter on a PVC over a base model",
            id="azure-model",
        ),
        pytest.param(
            earlier_model(baseModel="model://xbox-v0"),
            "spec.baseModel: model://xbox-v1 is not an adapter on a PVC over a base model",
            id="model-of-a-model",
        ),
        pytest.param(
            earlier_model(
                source={"pvc": {"claimName": "kubetune-models", "path": "adapters/xbox/"}}
            ),
            "spec.baseModel: the adapter of model://xbox-v1 is in this job's output directory",
            id="adapter-is-the-output",
        ),
    ],
)
def test_continuing_needs_a_separate_adapter_on_a_pvc(model, message):
    with pytest.raises(InvalidSpec, match="^" + re.escape(message)):
        continue_job(model)


def test_continued_model_records_the_resolved_base():
    model = build_finetuned_model(
        job_name="xbox",
        namespace=NS,
        spec=make_spec(baseModel="model://xbox-v1"),
        settings=SETTINGS,
        base_model=PHI3,
    )
    assert model["spec"]["baseModel"] == PHI3
    assert model["spec"]["source"] == {
        "pvc": {"claimName": "kubetune-models", "path": "adapters/xbox"}
    }


# --- FineTunedModel -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_name", "want_name"),
    [
        pytest.param(None, "xbox", id="job-name"),
        pytest.param("xbox-v2", "xbox-v2", id="spec-model"),
    ],
)
def test_finetuned_model_points_at_the_output(model_name: str | None, want_name: str):
    model = build_finetuned_model(
        job_name="xbox", namespace=NS, spec=make_spec(model=model_name), settings=SETTINGS
    )
    assert model == {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTunedModel",
        "metadata": {
            "name": want_name,
            "namespace": NS,
            "labels": {**MANAGED_BY, "kubetune.io/finetunejob": "xbox"},
        },
        "spec": {
            "baseModel": PHI3,
            "source": {"pvc": {"claimName": "kubetune-models", "path": "adapters/xbox"}},
            "sourceJob": "xbox",
            "deletionPolicy": "Retain",
        },
    }
    assert "ownerReferences" not in model["metadata"]
    FineTunedModelSpec.model_validate(model["spec"])


def test_finetuned_model_uses_the_default_output():
    settings = LocalSettings(default_output_pvc="shared-models")
    model = build_finetuned_model(
        job_name="xbox", namespace=NS, spec=make_spec(output=None), settings=settings
    )
    assert model["spec"]["source"] == {"pvc": {"claimName": "shared-models", "path": "xbox"}}


# --- serving --------------------------------------------------------------------------------


def server(deployment: dict) -> dict:
    (container,) = pod_spec(deployment)["containers"]
    return container


def test_vllm_serving_by_default():
    deployment = make_serving()
    assert server(deployment)["image"] == "vllm/vllm-openai:v0.6.4"
    assert server(deployment)["command"] == [
        "python3",
        "-m",
        "vllm.entrypoints.openai.api_server",
        f"--model={PHI3}",
        "--enable-lora",
        "--lora-modules=xbox=/models/adapters/adapters/xbox",
        "--port=8000",
        "--served-model-name=xbox",
    ]
    assert server(deployment)["resources"] == {
        "requests": {"nvidia.com/gpu": "1"},
        "limits": {"nvidia.com/gpu": "1"},
    }
    assert pod_spec(deployment)["tolerations"] == [GPU_TOLERATION]
    assert deployment["spec"]["replicas"] == 1
    assert "dshm" in volumes(deployment)


def test_kubetune_runtime_serves_on_cpu():
    deployment = make_serving({"runtime": "kubetune", "replicas": 2})
    assert server(deployment)["image"] == "ghcr.io/kubetune/kubetune-trainer:0.1.0"
    assert server(deployment)["command"] == [
        "python",
        "-m",
        "kubetune.serve",
        f"--base-model={PHI3}",
        "--adapter=/models/adapters/adapters/xbox",
        "--model-name=xbox",
        "--port=8000",
    ]
    assert server(deployment)["resources"] == {}
    assert pod_spec(deployment)["tolerations"] == []
    assert deployment["spec"]["replicas"] == 2
    assert "dshm" not in volumes(deployment)


@pytest.mark.parametrize(
    ("local", "want_tolerations", "want_gpu"),
    [
        pytest.param({"resources": {"gpus": 0}}, [], None, id="vllm-no-gpu"),
        pytest.param({"resources": {"gpus": 2}}, [GPU_TOLERATION], "2", id="vllm-two-gpus"),
        pytest.param(
            {"runtime": "kubetune", "resources": {"gpus": 1}}, [GPU_TOLERATION], "1", id="kt-gpu"
        ),
        pytest.param({"runtime": "kubetune"}, [], None, id="kubetune-default-cpu"),
    ],
)
def test_serving_gpu_toleration_only_with_gpus(
    local: dict, want_tolerations: list, want_gpu: str | None
):
    deployment = make_serving(local)
    assert pod_spec(deployment)["tolerations"] == want_tolerations
    assert server(deployment)["resources"].get("limits", {}).get("nvidia.com/gpu") == want_gpu


def test_serving_image_override_and_pvc_base_model():
    deployment = make_serving(
        {"image": "registry.local/vllm:dev"}, make_model(base_model="pvc://base-models/phi-3")
    )
    assert server(deployment)["image"] == "registry.local/vllm:dev"
    assert "--model=/models/base/phi-3" in server(deployment)["command"]
    assert volumes(deployment)["base-model"] == {
        "name": "base-model",
        "persistentVolumeClaim": {"claimName": "base-models", "readOnly": True},
    }
    assert volumes(deployment)["adapter"] == {
        "name": "adapter",
        "persistentVolumeClaim": {"claimName": "kubetune-models", "readOnly": True},
    }
    assert mounts(deployment)["adapter"] == {
        "name": "adapter",
        "mountPath": "/models/adapters",
        "readOnly": True,
    }


def test_serving_a_model_without_pvc_is_invalid():
    model = make_model(source={"azureModelId": "azureml://registries/r/models/xbox/versions/1"})
    with pytest.raises(InvalidSpec, match="FineTunedModel xbox has no PVC source"):
        make_serving(model=model)


def test_service_selects_the_serving_pods():
    deployment = make_serving()
    service = build_serving_service(name="chat", namespace=NS, uid="uid-mdep")
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"] == {DEPLOYMENT_LABEL: "chat"}
    assert deployment["spec"]["selector"] == {"matchLabels": {DEPLOYMENT_LABEL: "chat"}}
    assert template_labels[DEPLOYMENT_LABEL] == "chat"
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http"}]
    assert server(deployment)["ports"] == [{"name": "http", "containerPort": 8000}]
    owner = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": "chat",
        "uid": "uid-mdep",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert service["metadata"]["ownerReferences"] == [owner]
    assert deployment["metadata"]["ownerReferences"] == [owner]


# --- cleanup --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["", "/", "//"])
def test_cleanup_refuses_to_delete_a_whole_volume(path: str):
    with pytest.raises(InvalidSpec, match="refusing to delete all of volume kubetune-models"):
        make_cleanup(path)


def test_cleanup_deletes_the_adapter_directory():
    job = make_cleanup("adapters/xbox")
    (container,) = pod_spec(job)["containers"]
    assert container["command"] == ["rm", "-rf", "--", "/models/adapters/xbox"]
    assert container["volumeMounts"] == [{"name": "models", "mountPath": "/models"}]
    assert pod_spec(job)["volumes"] == [
        {"name": "models", "persistentVolumeClaim": {"claimName": "kubetune-models"}}
    ]
    assert job["metadata"]["name"] == "xbox-cleanup"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "FineTunedModel"
    assert pod_spec(job)["restartPolicy"] == "Never"


def test_cleanup_job_name_is_truncated():
    job = build_cleanup_job(
        name="m" * 63,
        namespace=NS,
        uid="u",
        source=PvcSource(claim_name="c", path="p"),
        settings=SETTINGS,
    )
    assert job["metadata"]["name"] == "m" * 50 + "-cleanup"
