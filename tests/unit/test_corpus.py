"""The bad-input corpus is well formed and large enough: manifests the API server rejects
(tests/manifests/invalid, checked by tests/cluster/test_crds.py), manifests the operator
refuses (tests/manifests/failing, tests/cluster/test_bad_input.py) and broken datasets
(tests/data/invalid, tests/unit/test_datavalidation.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.factories import corpus_headers
from tests.kube import ROOT

MANIFESTS = ROOT / "tests" / "manifests"
INVALID = sorted((MANIFESTS / "invalid").glob("*.yaml"))
FAILING = sorted((MANIFESTS / "failing").glob("*.yaml"))
DATASETS = sorted((ROOT / "tests" / "data" / "invalid").glob("*.jsonl"))
KINDS = {"FineTuneJob", "FineTunedModel", "ModelDeployment"}


def test_corpus_has_at_least_forty_cases():
    assert len(INVALID) + len(FAILING) + len(DATASETS) >= 40
    assert len(INVALID) >= 40, "every field's edge is in tests/manifests/invalid"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_says_what_the_api_server_answers(path: Path):
    expect = corpus_headers(path).get("expect", "")
    assert expect.strip(), f"{path.name} must start with '# expect: <message>'"
    (doc,) = list(yaml.safe_load_all(path.read_text()))
    assert doc["kind"] in KINDS, path.name


@pytest.mark.parametrize("path", FAILING, ids=lambda p: p.stem)
def test_failing_manifest_says_phase_and_condition(path: Path):
    found = corpus_headers(path)
    assert found.get("phase"), f"{path.name} needs '# phase: <Phase>'"
    ctype, _, text = found.get("condition", "").partition(": ")
    assert ctype, f"{path.name} needs '# condition: <Type>: <message text>'"
    assert text, path.name
    # The message names the field at fault (a deployment's, the model it waits for).
    assert text.startswith("spec.") or ctype == "ModelReady", f"{path.name}: {text}"
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs[-1]["kind"] in KINDS, path.name


@pytest.mark.parametrize("path", DATASETS, ids=lambda p: p.stem)
def test_broken_dataset_has_its_expected_report(path: Path):
    assert path.with_suffix(".expected").is_file(), f"{path.name} has no .expected file"
