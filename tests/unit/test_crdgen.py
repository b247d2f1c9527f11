from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from kubetune import cli
from kubetune.api import apidocs, crdgen, generated
from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.kinds import FINETUNEJOB, KINDS
from tests.kube import ROOT


def walk(node: Any, path: str = "") -> list[tuple[str, str, Any]]:
    """(path, key, value) for every key of every mapping in a schema."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((path, key, value))
            found.extend(walk(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(walk(value, f"{path}[{i}]"))
    return found


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural(kind):
    schema = crdgen.build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    keys = walk(schema)
    assert not [p for p, k, _ in keys if k in ("$ref", "$defs", "anyOf", "allOf", "title")]
    assert not [p for p, k, v in keys if k == "additionalProperties" and v is False]
    assert not [
        p for p, k, v in keys if k in ("exclusiveMinimum", "exclusiveMaximum") and v is not True
    ]
    # Every object with properties says it is an object; every property has a type.
    for path, key, value in keys:
        if key == "properties":
            for name, prop in value.items():
                assert "type" in prop, f"{path}/properties/{name} has no type"


def test_status_schema_has_no_defaults():
    for kind in KINDS:
        status = crdgen.build_schema(kind.status, defaults=False)
        assert not [p for p, k, _ in walk(status) if k == "default"], kind.kind


def test_exclusive_bound_uses_openapi_v3_form():
    spec = crdgen.build_schema(FineTuneJobSpec)
    split = spec["properties"]["dataset"]["properties"]["validationSplit"]
    assert (split["minimum"], split["exclusiveMinimum"], split["maximum"]) == (0, True, 0.5)


def test_field_descriptions_reach_the_schema():
    spec = crdgen.build_schema(FineTuneJobSpec)
    hp = spec["properties"]["hyperparameters"]
    assert hp["description"] == "Training hyper-parameters."
    assert "Foundry's knob" in hp["properties"]["learningRateMultiplier"]["description"]


def test_committed_crds_are_current(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(["crds", "--check"]) == 0


def test_check_fails_after_a_field_is_added(tmp_path: Path, monkeypatch, capsys):
    assert cli.main(["crds", "--root", str(tmp_path)]) == 0
    assert cli.main(["crds", "--check", "--root", str(tmp_path)]) == 0

    class ExtendedSpec(FineTuneJobSpec):
        new_knob: int | None = Field(default=None, description="A field added to the model.")

    extended = dataclasses.replace(FINETUNEJOB, spec=ExtendedSpec)
    for module in (crdgen, generated, apidocs):
        monkeypatch.setattr(module, "KINDS", (extended, *KINDS[1:]))
    capsys.readouterr()
    assert cli.main(["crds", "--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "crds/finetunejobs.kubetune.io.yaml is out of date" in err
    assert "templates/crds.yaml is out of date" in err
    assert "docs/api-reference.md is out of date" in err
    assert "finetunedmodels" not in err
