"""Kubernetes objects of the local backend, as plain dicts: the training Job, the
FineTunedModel it produces, the serving Deployment and Service, and the cleanup
Job that deletes an adapter. Pure: no API calls; tests compare the dicts.

Every pod passes the `restricted` Pod Security Standard: non-root, no privilege
escalation, all capabilities dropped, RuntimeDefault seccomp, and no
service-account token (training pods authenticate their progress reports with a
projected token whose only audience is kubetune).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from typing import Any

from kubetune.api.common import API_VERSION, DataSource, PvcSource, Toleration
from kubetune.api.finetunedmodel import FineTunedModelSpec
from kubetune.api.finetunejob import MODEL_SCHEME, FineTuneJobSpec
from kubetune.api.modeldeployment import ModelDeploymentSpec, Runtime
from kubetune.api.trainerconfig import TrainerConfig
from kubetune.datavalidation import BAD_INPUT_EXIT_CODE
from kubetune.errors import InvalidSpec
from kubetune.settings import LocalSettings
from kubetune.trainer.errors import UNSUPPORTED_EXIT_CODE

Manifest = dict[str, Any]

FINETUNEJOB_LABEL = "kubetune.io/finetunejob"
DEPLOYMENT_LABEL = "kubetune.io/modeldeployment"
MODEL_LABEL = "kubetune.io/finetunedmodel"
# Held on every FineTunedModel while a ModelDeployment or an unfinished FineTuneJob uses
# it (handlers/finetunedmodel.py).
MODEL_PROTECTION = "kubetune.io/model-protection"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kubetune", "app.kubernetes.io/part-of": "kubetune"}
QUEUE_LABEL_PREFIX = "kueue.x-k8s.io/"
CONFIG_ANNOTATION = "kubetune.io/trainer-config"
SPEC_HASH = "kubetune.io/spec-hash"
PROGRESS_AUDIENCE = "kubetune"
TRAINER_CONTAINER = "trainer"
SERVING_PORT = 8000
UID = 65532

CONFIG_DIR = "/etc/kubetune"
TOKEN_DIR = "/var/run/secrets/kubetune"
OUTPUT_MOUNT = "/output"
BASE_MODEL_MOUNT = "/models/base"
ADAPTER_MOUNT = "/models/adapter"


def inside(mount: str, path: str) -> str:
    """`path` on a volume mounted at `mount`. A leading slash means the volume's root;
    a path that would leave the volume (`..`) is refused."""
    relative = posixpath.normpath("/" + path).lstrip("/")
    if path and any(part == ".." for part in path.split("/")):
        raise InvalidSpec(f"path {path!r} must stay inside its volume (no '..')")
    return posixpath.join(mount, relative) if relative else mount


def owner_reference(kind: str, name: str, uid: str) -> Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_security_context() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Manifest:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def parse_pvc_uri(uri: str) -> PvcSource | None:
    """`pvc://claim/some/path` as a PvcSource; None for any other form."""
    if not uri.startswith("pvc://"):
        return None
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    if not claim:
        raise InvalidSpec(f"baseModel {uri!r}: expected pvc://<claim>/<path>")
    return PvcSource(claim_name=claim, path=path)


def _tolerations(
    extra: list[Toleration] | None, gpus: int, settings: LocalSettings
) -> list[Manifest]:
    base = (
        [{"key": settings.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}]
        if gpus
        else []
    )
    return base + [t.model_dump(by_alias=True, exclude_none=True) for t in extra or []]


def _resources(gpus: int, cpu: str | None, memory: str | None, settings: LocalSettings) -> Manifest:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if gpus:
        requests[settings.gpu_resource] = limits[settings.gpu_resource] = str(gpus)
    if cpu:
        requests["cpu"] = cpu
    if memory:
        requests["memory"] = limits["memory"] = memory
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


class _Mounts:
    """Volumes and mounts of a pod, built up source by source."""

    def __init__(self) -> None:
        self.volumes: list[Manifest] = []
        self.mounts: list[Manifest] = []

    def add(self, name: str, volume: Manifest, mount_path: str, *, read_only: bool) -> None:
        self.volumes.append({"name": name, **volume})
        self.mounts.append({"name": name, "mountPath": mount_path, "readOnly": read_only})

    def pvc(self, name: str, claim: str, mount_path: str, *, read_only: bool) -> None:
        volume = {"persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}
        self.add(name, volume, mount_path, read_only=read_only)

    def data(self, name: str, source: DataSource | None, filename: str) -> str | None:
        """Mount a dataset source; returns its path in the pod (None: the trainer fetches it)."""
        if source is None:
            return None
        mount_path = f"/data/{name}"
        if source.config_map is not None:
            cm = source.config_map
            volume = {"configMap": {"name": cm.name, "items": [{"key": cm.key, "path": filename}]}}
            self.add(name, volume, mount_path, read_only=True)
            return f"{mount_path}/{filename}"
        if source.pvc is not None:
            self.pvc(name, source.pvc.claim_name, mount_path, read_only=True)
            return inside(mount_path, source.pvc.path)
        return None


def output_location(spec: FineTuneJobSpec, job_name: str, settings: LocalSettings) -> PvcSource:
    """Where the adapter goes: spec.output's PVC, or the cluster default, under the job's name."""
    if spec.output is not None:
        claim, path = spec.output.pvc.claim_name, spec.output.pvc.path
    elif settings.default_output_pvc:
        claim, path = settings.default_output_pvc, ""
    else:
        raise InvalidSpec(
            "spec.output is required: this cluster has no default output PVC "
            "(Helm value local.defaultOutputPvc)"
        )
    return PvcSource(claim_name=claim, path=inside(path, job_name).lstrip("/"))


def training_labels(name: str, ftj_labels: dict[str, str]) -> dict[str, str]:
    """Labels of the Job and its pods: ours plus the FineTuneJob's Kueue labels."""
    queue = {k: v for k, v in ftj_labels.items() if k.startswith(QUEUE_LABEL_PREFIX)}
    return {
        **MANAGED_BY,
        "app.kubernetes.io/name": "kubetune-trainer",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "training",
        FINETUNEJOB_LABEL: name,
        **queue,
    }


def build_training_job(
    *,
    name: str,
    namespace: str,
    uid: str,
    labels: dict[str, str],
    spec: FineTuneJobSpec,
    settings: LocalSettings,
    continue_from: FineTunedModelSpec | None = None,
) -> Manifest:
    """The batch/v1 Job that trains a local FineTuneJob (same name as the FineTuneJob).

    With `spec.baseModel: model://<FineTunedModel>`, `continue_from` is that model's
    spec (resolved by the caller): the pod mounts its adapter and its base model, and
    the trainer trains the adapter further."""
    resources = spec.resources
    gpus = resources.gpus if resources else 1
    mounts = _Mounts()
    training = mounts.data("training", spec.dataset.training, "train.jsonl")
    validation = mounts.data("validation", spec.dataset.validation, "validation.jsonl")
    base_model, adapter = _starting_point(spec, continue_from)
    base = parse_pvc_uri(base_model)
    if base is not None:
        mounts.pvc("base-model", base.claim_name, BASE_MODEL_MOUNT, read_only=True)
    output = output_location(spec, name, settings)
    mounts.pvc("output", output.claim_name, OUTPUT_MOUNT, read_only=False)
    adapter_path = None
    if adapter is not None:
        if _same_dir(adapter, output):
            raise InvalidSpec(
                f"spec.baseModel: the adapter of {spec.base_model} is in this job's output "
                f"directory ({output.claim_name}:{output.path}); name the job differently"
            )
        if adapter.claim_name == output.claim_name:
            # One volume: a claim mounted twice, read-only and writable, may not attach.
            adapter_path = inside(OUTPUT_MOUNT, adapter.path)
        else:
            mounts.pvc("adapter", adapter.claim_name, ADAPTER_MOUNT, read_only=True)
            adapter_path = inside(ADAPTER_MOUNT, adapter.path)
    config = TrainerConfig(
        name=name,
        namespace=namespace,
        spec=spec,
        training_path=training,
        validation_path=validation,
        base_model_path=inside(BASE_MODEL_MOUNT, base.path) if base else None,
        base_model_id=base_model if continue_from is not None and base is None else None,
        adapter_path=adapter_path,
        output_dir=inside(OUTPUT_MOUNT, output.path),
        processes=max(gpus, 1),
        progress_url=f"{settings.progress_url}/v1/namespaces/{namespace}/finetunejobs/{name}/report",
        token_path=f"{TOKEN_DIR}/token",
    )
    mounts.add(
        "config",
        {
            "downwardAPI": {
                "items": [
                    {
                        "path": "config.json",
                        "fieldRef": {"fieldPath": f"metadata.annotations['{CONFIG_ANNOTATION}']"},
                    }
                ]
            }
        },
        CONFIG_DIR,
        read_only=True,
    )
    mounts.add(
        "progress-token",
        {
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": PROGRESS_AUDIENCE,
                            "expirationSeconds": 3600,
                            "path": "token",
                        }
                    }
                ]
            }
        },
        TOKEN_DIR,
        read_only=True,
    )
    mounts.add("dshm", {"emptyDir": {"medium": "Memory"}}, "/dev/shm", read_only=False)
    mounts.add("tmp", {"emptyDir": {}}, "/tmp", read_only=False)
    pod_labels = training_labels(name, labels)
    command = [
        "python",
        "-m",
        "kubetune.trainer",
        "--config",
        f"{CONFIG_DIR}/config.json",
        f"--nproc-per-node={max(gpus, 1)}",
    ]
    pod_spec: Manifest = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "tolerations": _tolerations(spec.tolerations, gpus, settings),
        "containers": [
            {
                "name": TRAINER_CONTAINER,
                "image": spec.image or settings.trainer_image,
                "command": command,
                "env": [
                    {"name": "HOME", "value": "/tmp"},
                    {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
                ],
                "resources": _resources(
                    gpus,
                    resources.cpu if resources else None,
                    resources.memory if resources else None,
                    settings,
                ),
                "securityContext": container_security_context(),
                "volumeMounts": mounts.mounts,
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": mounts.volumes,
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    job_spec: Manifest = {
        "backoffLimit": spec.backoff_limit,
        # Bad input or a job that cannot run as configured fails at once (a retry
        # would fail the same way); a disruption (eviction, preemption, node drain)
        # is not the trainer's fault and does not use up a retry.
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": TRAINER_CONTAINER,
                        "operator": "In",
                        "values": [BAD_INPUT_EXIT_CODE, UNSUPPORTED_EXIT_CODE],
                    },
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]
        },
        # Queued jobs start suspended so that Kueue admits them.
        "suspend": spec.suspend or any(k.startswith(QUEUE_LABEL_PREFIX) for k in pod_labels),
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {CONFIG_ANNOTATION: config.model_dump_json(by_alias=True)},
            },
            "spec": pod_spec,
        },
    }
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": pod_labels,
            "ownerReferences": [owner_reference("FineTuneJob", name, uid)],
        },
        "spec": job_spec,
    }


def _starting_point(
    spec: FineTuneJobSpec, continue_from: FineTunedModelSpec | None
) -> tuple[str, PvcSource | None]:
    """The base model (never model://) and the adapter to train further, if any."""
    if not spec.base_model.startswith(MODEL_SCHEME):
        return spec.base_model, None
    if continue_from is None:
        raise InvalidSpec(f"spec.baseModel: {spec.base_model} was not resolved")
    if continue_from.source.pvc is None or continue_from.base_model.startswith(MODEL_SCHEME):
        raise InvalidSpec(
            f"spec.baseModel: {spec.base_model} is not an adapter on a PVC over a base model"
        )
    return continue_from.base_model, continue_from.source.pvc


def _same_dir(a: PvcSource, b: PvcSource) -> bool:
    return a.claim_name == b.claim_name and inside("/", a.path) == inside("/", b.path)


def build_finetuned_model(
    *,
    job_name: str,
    namespace: str,
    spec: FineTuneJobSpec,
    settings: LocalSettings,
    base_model: str | None = None,
) -> Manifest:
    """The FineTunedModel a succeeded local job registers. Deliberately not owned by the
    job: deleting the job's record keeps the model. `base_model` is the resolved base
    (status.resolvedBaseModel) when it differs from spec.baseModel (model://...)."""
    source = output_location(spec, job_name, settings)
    model = FineTunedModelSpec(
        base_model=base_model or spec.base_model,
        source={"pvc": source},
        source_job=job_name,
    )
    return {
        "apiVersion": API_VERSION,
        "kind": "FineTunedModel",
        "metadata": {
            "name": spec.model or job_name,
            "namespace": namespace,
            "labels": {**MANAGED_BY, FINETUNEJOB_LABEL: job_name},
        },
        "spec": model.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def serving_labels(name: str) -> dict[str, str]:
    return {
        **MANAGED_BY,
        "app.kubernetes.io/name": "kubetune-serving",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "serving",
        DEPLOYMENT_LABEL: name,
    }


def build_serving_deployment(
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: ModelDeploymentSpec,
    model_name: str,
    model: FineTunedModelSpec,
    settings: LocalSettings,
) -> Manifest:
    """An apps/v1 Deployment serving the model's LoRA adapter over the OpenAI API."""
    local = spec.local
    runtime = local.runtime if local else Runtime.VLLM
    replicas = local.replicas if local else 1
    res = local.resources if local else None
    gpus = res.gpus if res else (1 if runtime is Runtime.VLLM else 0)
    if model.source.pvc is None:
        raise InvalidSpec(f"FineTunedModel {model_name} has no PVC source to serve locally")
    mounts = _Mounts()
    mounts.pvc("adapter", model.source.pvc.claim_name, "/models/adapters", read_only=True)
    adapter = inside("/models/adapters", model.source.pvc.path)
    base = parse_pvc_uri(model.base_model)
    if base is not None:
        mounts.pvc("base-model", base.claim_name, BASE_MODEL_MOUNT, read_only=True)
    base_ref = inside(BASE_MODEL_MOUNT, base.path) if base else model.base_model
    mounts.add("tmp", {"emptyDir": {}}, "/tmp", read_only=False)
    if runtime is Runtime.VLLM:
        mounts.add("dshm", {"emptyDir": {"medium": "Memory"}}, "/dev/shm", read_only=False)
        image = (local.image if local else None) or settings.vllm_image
        command = [
            "python3",
            "-m",
            "vllm.entrypoints.openai.api_server",
            f"--model={base_ref}",
            "--enable-lora",
            f"--lora-modules={model_name}={adapter}",
            f"--port={SERVING_PORT}",
            f"--served-model-name={model_name}",
        ]
    else:
        image = (local.image if local else None) or settings.trainer_image
        command = [
            "python",
            "-m",
            "kubetune.serve",
            f"--base-model={base_ref}",
            f"--adapter={adapter}",
            f"--model-name={model_name}",
            f"--port={SERVING_PORT}",
        ]
    labels = serving_labels(name)
    pod_spec: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "tolerations": _tolerations(local.tolerations if local else None, gpus, settings),
        "containers": [
            {
                "name": "server",
                "image": image,
                "command": command,
                "env": [{"name": "HOME", "value": "/tmp"}],
                "ports": [{"name": "http", "containerPort": SERVING_PORT}],
                "readinessProbe": {
                    "httpGet": {"path": "/v1/models", "port": "http"},
                    "periodSeconds": 5,
                },
                "resources": _resources(
                    gpus, res.cpu if res else None, res.memory if res else None, settings
                ),
                "securityContext": container_security_context(),
                "volumeMounts": mounts.mounts,
            }
        ],
        "volumes": mounts.volumes,
    }
    if local and local.node_selector:
        pod_spec["nodeSelector"] = dict(local.node_selector)
    spec_: Manifest = {
        "replicas": replicas,
        "selector": {"matchLabels": {DEPLOYMENT_LABEL: name}},
        "progressDeadlineSeconds": 600,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    # The hash of what we asked for: the operator re-applies only when it changes.
    digest = hashlib.sha256(json.dumps(spec_, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {SPEC_HASH: digest},
            "ownerReferences": [owner_reference("ModelDeployment", name, uid)],
        },
        "spec": spec_,
    }


def build_serving_service(*, name: str, namespace: str, uid: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": serving_labels(name),
            "ownerReferences": [owner_reference("ModelDeployment", name, uid)],
        },
        "spec": {
            "selector": {DEPLOYMENT_LABEL: name},
            "ports": [{"name": "http", "port": SERVING_PORT, "targetPort": "http"}],
        },
    }


def serving_endpoint(name: str, namespace: str) -> str:
    return f"http://{name}.{namespace}.svc:{SERVING_PORT}/v1"


def build_cleanup_job(
    *, name: str, namespace: str, uid: str, source: PvcSource, settings: LocalSettings
) -> Manifest:
    """A short Job that deletes a model's adapter directory from its PVC."""
    if inside("/models", source.path) == "/models":
        raise InvalidSpec(
            f"refusing to delete all of volume {source.claim_name}: the model's source has no path"
        )
    job_name = f"{name[:50]}-cleanup"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": namespace,
            "labels": {**MANAGED_BY, MODEL_LABEL: name},
            "ownerReferences": [owner_reference("FineTunedModel", name, uid)],
        },
        "spec": {
            "backoffLimit": 2,
            "ttlSecondsAfterFinished": 300,
            "template": {
                "metadata": {"labels": {**MANAGED_BY, MODEL_LABEL: name}},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(),
                    "containers": [
                        {
                            "name": "cleanup",
                            "image": settings.trainer_image,
                            "command": ["rm", "-rf", "--", inside("/models", source.path)],
                            "securityContext": container_security_context(),
                            "volumeMounts": [{"name": "models", "mountPath": "/models"}],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "models",
                            "persistentVolumeClaim": {"claimName": source.claim_name},
                        }
                    ],
                },
            },
        },
    }


def finetuned_model_manifest(
    *, name: str, namespace: str, job_name: str, spec: FineTunedModelSpec
) -> Manifest:
    """A FineTunedModel registered by job `job_name` (either backend). Deliberately not
    owned by the job: deleting the job's record keeps the model."""
    return {
        "apiVersion": API_VERSION,
        "kind": "FineTunedModel",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**MANAGED_BY, FINETUNEJOB_LABEL: job_name},
        },
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
