"""Builders of test objects with sensible defaults (Kueue's Make… style)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.kube import ROOT

API = "kubetune.io/v1alpha1"
DATA = yaml.safe_load((ROOT / "examples" / "00-xbox-data.yaml").read_text())
OUTPUT_CLAIM = "kubetune-models"


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def make_finetunejob(name: str = "xbox", labels: dict[str, str] | None = None, **spec: Any) -> dict:
    base = {
        "backend": "local",
        "baseModel": "microsoft/Phi-3-mini-4k-instruct",
        "dataset": {
            "training": {"configMap": {"name": DATA["metadata"]["name"], "key": "train.jsonl"}},
            "validationSplit": 0.1,
        },
        "resources": {"gpus": 1},
        "output": {"pvc": {"claimName": OUTPUT_CLAIM, "path": "adapters"}},
    }
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    return {
        "apiVersion": API,
        "kind": "FineTuneJob",
        "metadata": metadata,
        "spec": merge(base, spec),
    }


def make_model(name: str = "xbox", **spec: Any) -> dict:
    base = {
        "baseModel": "microsoft/Phi-3-mini-4k-instruct",
        "source": {"pvc": {"claimName": OUTPUT_CLAIM, "path": f"adapters/{name}"}},
    }
    return {
        "apiVersion": API,
        "kind": "FineTunedModel",
        "metadata": {"name": name},
        "spec": merge(base, spec),
    }


def make_deployment(name: str = "xbox", model: str = "xbox", **spec: Any) -> dict:
    base = {
        "modelRef": {"name": model},
        "backend": "local",
        "local": {"runtime": "kubetune", "replicas": 1, "resources": {"gpus": 0}},
    }
    return {
        "apiVersion": API,
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": merge(base, spec),
    }


def corpus_headers(path: Path) -> dict[str, str]:
    """The `# key: value` lines heading a corpus file (tests/manifests/*), as a dict."""
    found = {}
    for line in path.read_text().splitlines():
        if not line.startswith("# "):
            break
        key, _, value = line.removeprefix("# ").partition(": ")
        found[key] = value
    return found
