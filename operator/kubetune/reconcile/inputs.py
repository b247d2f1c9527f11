"""What a local FineTuneJob reads, checked before its training Job is created. Pure: the
caller fetches the referenced objects; no I/O, clock injected.

Two kinds of reference, two policies:

- Dataset ConfigMaps (`spec.dataset.training` / `.validation` with `configMap`): a
  missing ConfigMap or key keeps the job Pending, with an `InputsReady=False`
  condition naming the field, for `reference_timeout` seconds after the job was
  created (kubectl, Helm and Argo CD apply ConfigMaps before custom resources, so
  this only bridges apply order); after that the job ends `Failed` naming the field.
  A training pod would otherwise wait for the volume forever.
- `spec.baseModel: model://<FineTunedModel>`: a model that does not exist yet keeps
  the job Pending with no deadline, as a ModelDeployment waits for its model: the
  model may be the output of a job that is still training (iterations applied
  together). A model that cannot be continued from locally (an Azure model, one
  whose own baseModel is not a base model, one being deleted), and the job's own
  output model, fail the job at once, naming `spec.baseModel`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from kubetune.api.common import ConditionStatus
from kubetune.api.finetunedmodel import FineTunedModelPhase, FineTunedModelSpec
from kubetune.api.finetunejob import MODEL_SCHEME, FineTuneJobSpec, FineTuneJobStatus
from kubetune.conditions import set_condition

INPUTS_READY = "InputsReady"
WAIT_FOR_DATA = 5.0
"""Seconds between checks of a missing dataset ConfigMap."""
WAIT_FOR_MODEL = 10.0
"""Seconds between checks of a FineTunedModel that is not there or not Ready yet."""
USABLE = (FineTunedModelPhase.READY, FineTunedModelPhase.IN_USE)

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class Resolved:
    """Everything is there. `model` is the FineTunedModel spec.baseModel names, if any."""

    base_model: str
    """The base model the adapter applies to (never model://)."""
    model: FineTunedModelSpec | None = None


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str
    retry_after: float


@dataclass(frozen=True)
class Unusable:
    reason: str
    message: str


Resolution = Resolved | Waiting | Unusable


def referenced_model(spec: FineTuneJobSpec) -> str | None:
    """The FineTunedModel named by `spec.baseModel: model://<name>`, else None."""
    return model_reference(spec.base_model)


def model_reference(base_model: str) -> str | None:
    """The FineTunedModel that a baseModel of `model://<name>` names, else None."""
    if not base_model.startswith(MODEL_SCHEME):
        return None
    return base_model.removeprefix(MODEL_SCHEME) or None


def referenced_config_maps(spec: FineTuneJobSpec) -> dict[str, tuple[str, str]]:
    """Field path -> (ConfigMap name, key) for each dataset read from a ConfigMap."""
    refs: dict[str, tuple[str, str]] = {}
    for field, source in (
        ("spec.dataset.training", spec.dataset.training),
        ("spec.dataset.validation", spec.dataset.validation),
    ):
        if source is not None and source.config_map is not None:
            refs[field] = (source.config_map.name, source.config_map.key)
    return refs


def _check_data(
    spec: FineTuneJobSpec,
    config_maps: Mapping[str, Collection[str] | None],
    namespace: str,
    age: float,
    timeout: float,
) -> Waiting | Unusable | None:
    for field, (name, key) in referenced_config_maps(spec).items():
        keys = config_maps.get(name)
        if keys is None:
            problem = f"{field}: ConfigMap {name} does not exist in namespace {namespace}"
        elif key not in keys:
            have = ", ".join(sorted(keys)) or "none"
            problem = f"{field}: ConfigMap {name} has no key {key} (keys: {have})"
        else:
            continue
        if age >= timeout:
            return Unusable("DatasetNotFound", f"{problem} (waited {timeout:.0f}s)")
        left = timeout - age
        return Waiting(
            "DatasetNotFound",
            f"{problem}; waiting up to {left:.0f}s more",
            min(WAIT_FOR_DATA, max(left, 1.0)),
        )
    return None


def _check_model(name: str, job_name: str, model: Obj | None) -> Resolution:
    if model is None:
        return Waiting(
            "BaseModelNotFound",
            f"spec.baseModel: FineTunedModel {name} does not exist yet; waiting for it",
            WAIT_FOR_MODEL,
        )
    if model.get("metadata", {}).get("deletionTimestamp"):
        return Unusable(
            "BaseModelUnusable", f"spec.baseModel: FineTunedModel {name} is being deleted"
        )
    try:
        spec = FineTunedModelSpec.model_validate(model.get("spec") or {})
    except ValidationError as e:
        return Unusable(
            "BaseModelUnusable",
            f"spec.baseModel: FineTunedModel {name} has an invalid spec: {e.errors()[0]['msg']}",
        )
    phase = (model.get("status") or {}).get("phase")
    if spec.source.pvc is None:
        return Unusable(
            "BaseModelUnusable",
            f"spec.baseModel: FineTunedModel {name} is an Azure model (source.azureModelId); "
            "backend local continues from an adapter on a PVC only",
        )
    if spec.base_model.startswith(MODEL_SCHEME):
        return Unusable(
            "BaseModelUnusable",
            f"spec.baseModel: FineTunedModel {name} has baseModel {spec.base_model}, "
            "not a base model",
        )
    if spec.source_job == job_name:
        return Unusable(
            "BaseModelUnusable",
            f"spec.baseModel: FineTunedModel {name} is this job's own output",
        )
    if phase not in USABLE:
        return Waiting(
            "BaseModelNotReady",
            f"spec.baseModel: FineTunedModel {name} is {phase or 'not accepted yet'}; "
            "waiting for it to be Ready",
            WAIT_FOR_MODEL,
        )
    return Resolved(base_model=spec.base_model, model=spec)


def resolve_inputs(
    spec: FineTuneJobSpec,
    *,
    name: str,
    namespace: str,
    config_maps: Mapping[str, Collection[str] | None],
    model: Obj | None,
    age: float,
    timeout: float,
) -> Resolution:
    """Checks the job's references. `config_maps` maps each referenced ConfigMap's name
    to its keys (None: not found); `model` is the FineTunedModel that spec.baseModel
    names (None: not found, or spec.baseModel is not model://); `age` is seconds since
    the job was created."""
    wanted = referenced_model(spec)
    if wanted is not None and wanted == (spec.model or name):
        return Unusable(
            "InvalidSpec",
            f"spec.baseModel: {spec.base_model} is this job's own output model "
            f"({'spec.model' if spec.model else 'the job name, as spec.model is unset'}); "
            "continue from an earlier model",
        )
    if (data := _check_data(spec, config_maps, namespace, age, timeout)) is not None:
        return data
    if wanted is None:
        return Resolved(base_model=spec.base_model)
    return _check_model(wanted, name, model)


def inputs_status(
    old: FineTuneJobStatus, resolution: Resolved | Waiting, *, generation: int, now: datetime
) -> FineTuneJobStatus:
    """The InputsReady condition (and the resolved base model) for a resolution."""
    if isinstance(resolution, Waiting):
        conditions = set_condition(
            old.conditions,
            INPUTS_READY,
            ConditionStatus.FALSE,
            resolution.reason,
            resolution.message,
            generation=generation,
            now=now,
        )
        return old.model_copy(update={"conditions": conditions})
    conditions = set_condition(
        old.conditions,
        INPUTS_READY,
        ConditionStatus.TRUE,
        "Resolved",
        f"The dataset and the base model {resolution.base_model} are available.",
        generation=generation,
        now=now,
    )
    return old.model_copy(
        update={"conditions": conditions, "resolved_base_model": resolution.base_model}
    )


def age_seconds(created: str | None, now: datetime) -> float:
    """Seconds since an object's metadata.creationTimestamp (0 when unknown)."""
    if not created:
        return 0.0
    return max(0.0, (now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds())
