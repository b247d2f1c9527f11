"""Property-based tests (hypothesis) of what reads untrusted input: the JSONL validator
never raises and always ends on any bytes or JSON lines, and the spec models either
accept arbitrary JSON or reject it with pydantic's ValidationError (the operator's
parse_spec with InvalidSpec naming a spec field), never anything else.

Hangs are caught by hypothesis' per-example deadline, a generous bound for a loaded
machine, not a performance check. No example database: nothing is written into the tree.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from kubetune.api.finetunedmodel import FineTunedModelSpec
from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.modeldeployment import ModelDeploymentSpec
from kubetune.datavalidation import Report, validate_chat_jsonl
from kubetune.errors import InvalidSpec
from kubetune.reconcile.acceptance import parse_spec

PROPERTY = settings(
    max_examples=100,
    deadline=timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SPECS = (FineTuneJobSpec, FineTunedModelSpec, ModelDeploymentSpec)

# --- JSON values ------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["", " ", "system", "user", "assistant", "local", "foundry", "ü漢🙂"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

# Examples that look like chat data, so that the message checks are reached too.
messages = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "role": st.sampled_from(["system", "user", "assistant", "tool"]) | json_values,
            "content": st.text(max_size=30) | json_values,
            "weight": st.sampled_from([0, 1, 2, -1, 0.5, True]) | json_values,
            "name": json_values,
        },
    )
    | json_values,
    max_size=5,
)
examples = st.fixed_dictionaries(
    {}, optional={"messages": messages | json_values, "x": json_values}
)
lines = examples.map(json.dumps) | json_values.map(json.dumps) | st.text(max_size=40)


def check_report(report: Report, data: bytes) -> None:
    line_count = data.count(b"\n") + 1
    assert 0 <= report.examples <= line_count
    for problem in report.problems:
        assert problem.line is None or 1 <= problem.line <= line_count, problem
        assert problem.reason, problem
        assert "\n" not in problem.reason, problem


@PROPERTY
@given(st.binary(max_size=2000))
def test_validator_on_arbitrary_bytes(data: bytes):
    check_report(validate_chat_jsonl(data, min_examples=1), data)


@PROPERTY
@given(st.lists(lines, max_size=15), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_validator_on_json_lines(found: list[str], end: str, bom: bool):
    data = (b"\xef\xbb\xbf" if bom else b"") + end.join(found).encode()
    report = validate_chat_jsonl(data)
    check_report(report, data)
    if not found:
        assert report.examples == 0


@PROPERTY
@given(st.lists(examples.map(json.dumps), min_size=1, max_size=12))
def test_validator_counts_every_line(found: list[str]):
    data = "\n".join(found).encode()
    report = validate_chat_jsonl(data, min_examples=1)
    assert report.examples == len(found)
    valid = {p.line for p in report.problems if p.line is not None}
    assert valid <= set(range(1, len(found) + 1))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"[" * 100_000, id="deep-list"),
        pytest.param(b'{"messages": ' + b"[" * 100_000, id="deep-messages"),
        pytest.param(b'{"messages": [{"role": ' + b"9" * 5000 + b"}]}", id="huge-integer"),
        pytest.param(b"\n" * 10_000, id="only-newlines"),
        pytest.param(b"\x00\xff" * 1000, id="binary"),
    ],
)
def test_validator_on_hostile_lines(data: bytes):
    check_report(validate_chat_jsonl(data), data)


# --- spec models ------------------------------------------------------------------------------


STRINGS = st.text(alphabet="abcxyz019-./:_", max_size=12) | st.sampled_from(
    ["model://m", "pvc://c/p", "https://x", "azureml://m", "b", "4bit", "none", "ü"]
)


def plausible(annotation: Any, depth: int) -> st.SearchStrategy[Any]:
    """Values of the annotation's type (often valid, not always), arbitrary JSON otherwise."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return shaped_like(annotation, depth + 1) if depth < 4 else json_values
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return st.sampled_from([m.value for m in annotation])
    if origin is typing.Annotated:
        return plausible(args[0], depth)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(plausible(a, depth) for a in args if a is not type(None)))
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(plausible(args[0], depth), max_size=3)
    if origin is dict:
        return st.dictionaries(STRINGS, plausible(args[1], depth), max_size=3)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        bool: st.booleans(),
        int: st.integers(min_value=-2, max_value=40),
        float: st.floats(min_value=-0.5, max_value=2),
        str: STRINGS,
    }
    return simple.get(annotation, json_values)


def shaped_like(model: type[BaseModel], depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the model's own (camelCase) keys and values mostly of the right type,
    nested models shaped likewise, arbitrary JSON anywhere: validation goes past the first
    wrong key, and a fair share of the objects are valid."""
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    hints = typing.get_type_hints(model, include_extras=True)
    for name, info in model.model_fields.items():
        typed = plausible(hints[name], depth)
        key = info.alias or name
        if info.is_required():
            required[key] = typed
        else:
            optional[key] = st.one_of(typed, typed, json_values)
    return st.fixed_dictionaries(required, optional=optional) | st.fixed_dictionaries(
        {}, optional={k: v | json_values for k, v in {**required, **optional}.items()}
    )


def validate_or_reject(model: type[BaseModel], value: Any) -> None:
    try:
        parsed = model.model_validate(value)
    except ValidationError:
        return
    # Accepted: what the operator writes back (camelCase JSON) parses to the same spec.
    again = model.model_validate(parsed.model_dump(mode="json", by_alias=True))
    assert again == parsed


@pytest.mark.parametrize("model", SPECS, ids=lambda m: m.__name__)
@PROPERTY
@given(data=st.data())
def test_spec_models_on_arbitrary_json(model: type[BaseModel], data: st.DataObject):
    validate_or_reject(model, data.draw(json_values))


@pytest.mark.parametrize("model", SPECS, ids=lambda m: m.__name__)
@PROPERTY
@given(data=st.data())
def test_spec_models_on_spec_shaped_json(model: type[BaseModel], data: st.DataObject):
    validate_or_reject(model, data.draw(shaped_like(model)))


@pytest.mark.parametrize("model", SPECS, ids=lambda m: m.__name__)
@PROPERTY
@given(data=st.data())
def test_parse_spec_names_the_field(model: type[BaseModel], data: st.DataObject):
    """The operator's acceptance step: a spec is parsed, or InvalidSpec lists each
    problem with its field path under `spec.`."""
    value = data.draw(shaped_like(model))
    problem = ""
    try:
        parse_spec(model, value)
    except InvalidSpec as e:
        problem = str(e)
    assert not problem or problem.startswith("spec."), problem


@pytest.mark.parametrize("model", SPECS, ids=lambda m: m.__name__)
def test_shaped_json_reaches_valid_specs(model: type[BaseModel]):
    """The strategy is not all rejections, so the round trip above is exercised."""

    def valid(value: dict[str, Any]) -> bool:
        try:
            model.model_validate(value)
        except ValidationError:
            return False
        return True

    found = find(shaped_like(model), valid, settings=settings(max_examples=2000, database=None))
    assert model.model_validate(found)
