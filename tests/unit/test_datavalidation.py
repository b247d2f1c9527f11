from __future__ import annotations

import json
import subprocess
import sys
import types
from typing import ClassVar

import pytest
import yaml

from kubetune import cli
from kubetune.datavalidation import (
    BAD_INPUT_EXIT_CODE,
    Problem,
    Report,
    TokenizerUnavailable,
    example_lines,
    load_token_counter,
    split_examples,
    validate_chat_jsonl,
)
from tests.kube import ROOT

XBOX = yaml.safe_load((ROOT / "examples" / "00-xbox-data.yaml").read_text())["data"]["train.jsonl"]
LINES = XBOX.splitlines()


def jsonl(*lines: str | bytes) -> bytes:
    return b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines)


def replaced(line: int, text: str | bytes) -> bytes:
    """The Xbox data (12 examples) with 1-based `line` replaced by `text`."""
    lines: list[str | bytes] = list(LINES)
    lines[line - 1] = text
    return jsonl(*lines)


def chat(*messages: dict[str, object]) -> str:
    return json.dumps({"messages": list(messages)})


def user(content: object = "Hi", **extra: object) -> dict[str, object]:
    return {"role": "user", "content": content, **extra}


def bot(content: object = "Hello", **extra: object) -> dict[str, object]:
    return {"role": "assistant", "content": content, **extra}


def reasons(report: Report) -> list[tuple[int | None, str]]:
    return [(p.line, p.reason) for p in report.problems]


# --- the module ---------------------------------------------------------------------------


def test_xbox_example_is_clean():
    report = validate_chat_jsonl(XBOX.encode())
    assert report == Report(examples=12, problems=[])
    assert report.ok


def test_reads_a_path(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(XBOX)
    assert validate_chat_jsonl(path).ok


def test_bom_and_crlf_and_missing_final_newline_are_accepted():
    data = b"\xef\xbb\xbf" + "\r\n".join(LINES).encode()
    assert validate_chat_jsonl(data) == Report(examples=12, problems=[])


def test_invalid_utf8_is_reported_with_its_line():
    report = validate_chat_jsonl(replaced(4, b'{"messages": "\xff"}'))
    assert reasons(report) == [(4, "invalid UTF-8 at byte 15 of the line")]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param('{"messages": [', "invalid JSON: Expecting value at column 15", id="bad-json"),
        pytest.param('{"a": NaN}', "invalid JSON: NaN is not valid JSON", id="nan"),
        pytest.param("[1, 2]", "line is a list, not a JSON object", id="list"),
        pytest.param('"text"', "line is a string, not a JSON object", id="string"),
        pytest.param('{"prompt": "Hi"}', 'no "messages" key', id="no-messages"),
        pytest.param('{"messages": {}}', "messages must be a list, got an object", id="not-list"),
        pytest.param('{"messages": []}', "messages is empty", id="empty-messages"),
        pytest.param(chat(user(), "x", bot()), "messages[1] is a string, not an object", id="msg"),
        pytest.param(
            chat({"role": "tool", "content": "x"}, bot()),
            'messages[0]: role "tool" is not one of system, user, assistant',
            id="bad-role",
        ),
        pytest.param(chat({"content": "x"}, bot()), "messages[0] has no role", id="no-role"),
        pytest.param(
            chat(user(), bot(), user()),
            'the last message is from "user", not the assistant',
            id="last-not-assistant",
        ),
        pytest.param(
            chat({"role": "system", "content": "Be nice"}, user()),
            "no assistant message",
            id="no-assistant",
        ),
        pytest.param(chat(user(), bot("")), "messages[1]: content is empty", id="empty"),
        pytest.param(chat(user(" \n "), bot()), "messages[0]: content is empty", id="blank"),
        pytest.param(chat(user(), {"role": "assistant"}), "messages[1] has no content", id="none"),
        pytest.param(
            chat(user(42), bot()),
            "messages[0]: content must be a string, got a number",
            id="number-content",
        ),
        pytest.param(
            chat(user([{"type": "text", "text": "Hi"}]), bot()),
            "messages[0]: content must be a string, got a list",
            id="list-content",
        ),
        pytest.param(
            chat(user(None), bot()),
            "messages[0]: content must be a string, got null",
            id="null-content",
        ),
        pytest.param(
            chat(user(), bot(weight=2)), "messages[1]: weight must be 0 or 1, got 2", id="weight-2"
        ),
        pytest.param(
            chat(user(), bot(weight=True)),
            "messages[1]: weight must be 0 or 1, got true",
            id="weight-true",
        ),
        pytest.param(
            chat(user(), bot(weight=1.0)),
            "messages[1]: weight must be 0 or 1, got 1.0",
            id="weight-float",
        ),
        pytest.param(
            chat(user(), bot(weight="1")),
            'messages[1]: weight must be 0 or 1, got "1"',
            id="weight-string",
        ),
        pytest.param(
            chat(user(weight=1), bot()),
            "messages[0]: weight is only allowed on assistant messages",
            id="weight-on-user",
        ),
        pytest.param(
            chat(user(), bot(weight=0), user(), bot(weight=0)),
            "every assistant message has weight 0: nothing to train on",
            id="all-weight-0",
        ),
        pytest.param(
            chat(user(name="bob"), bot()), 'messages[0]: unknown key "name"', id="unknown-key"
        ),
        pytest.param("", "blank line", id="blank-line"),
        pytest.param("   \t", "blank line", id="whitespace-line"),
    ],
)
def test_bad_line_is_reported_with_its_number(line, reason):
    report = validate_chat_jsonl(replaced(7, line))
    assert reasons(report) == [(7, reason)]
    assert not report.ok


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(chat(user(), bot(weight=0), user(), bot(weight=1)), id="weights"),
        pytest.param(chat(user("a"), bot("b"), user("c"), bot("d")), id="multi-turn"),
        pytest.param(chat(bot()), id="assistant-only"),
        pytest.param(json.dumps({"messages": [user(), bot()], "id": 7}), id="top-level-key"),
    ],
)
def test_accepted_variants(line):
    assert validate_chat_jsonl(replaced(7, line)).ok


def test_long_values_are_shortened_in_reasons():
    report = validate_chat_jsonl(replaced(1, chat({"role": "x" * 100, "content": "y"}, bot())))
    (problem,) = report.problems
    assert problem.reason.startswith('messages[0]: role "xxx')
    assert len(problem.reason) < 120


def test_fewer_than_10_examples():
    report = validate_chat_jsonl(jsonl(*LINES[:9]))
    assert report.examples == 9
    assert reasons(report) == [(None, "9 examples; at least 10 required")]


def test_empty_file():
    assert reasons(validate_chat_jsonl(b"")) == [(None, "0 examples; at least 10 required")]
    assert validate_chat_jsonl(b"\xef\xbb\xbf", min_examples=0).ok


def test_minimum_is_the_callers():
    assert validate_chat_jsonl(jsonl(LINES[0]), min_examples=1).ok
    assert reasons(validate_chat_jsonl(jsonl(LINES[0]), min_examples=2)) == [
        (None, "1 example; at least 2 required")
    ]


def test_duplicates_name_both_lines():
    # Whitespace and key order do not make an example different.
    again = json.dumps(json.loads(LINES[2]), indent=None, separators=(" ,", " :"))
    report = validate_chat_jsonl(jsonl(*LINES, LINES[2], again))
    assert report.examples == 14
    assert reasons(report) == [(13, "duplicate of line 3"), (14, "duplicate of line 3")]


def test_all_problems_are_reported_at_once():
    data = jsonl(
        LINES[0],
        b"\xfe",
        "",
        chat(user(weight=1), {"role": "robot", "content": 1}),
        LINES[0],
        "{",
    )
    report = validate_chat_jsonl(data)
    assert report.examples == 5
    assert reasons(report) == [
        (2, "invalid UTF-8 at byte 1 of the line"),
        (3, "blank line"),
        (4, "messages[0]: weight is only allowed on assistant messages"),
        (4, 'messages[1]: role "robot" is not one of system, user, assistant'),
        (4, "messages[1]: content must be a string, got a number"),
        (4, "no assistant message"),
        (5, "duplicate of line 1"),
        (6, "invalid JSON: Expecting property name enclosed in double quotes at column 2"),
        (None, "5 examples; at least 10 required"),
    ]
    assert all("\n" not in p.reason for p in report.problems)


def words(example):
    return sum(len(m["content"].split()) for m in example["messages"])


def test_token_limit_is_checked_only_with_a_counter():
    short = [chat(user(f"q{i}"), bot(f"a{i}")) for i in range(10)]
    short[1] = chat(user("one two three"), bot("four five six seven"))
    data = jsonl(*short)
    assert validate_chat_jsonl(data).ok
    report = validate_chat_jsonl(data, count_tokens=words, max_tokens=6)
    assert reasons(report) == [(2, "7 tokens, over the maximum of 6")]
    assert validate_chat_jsonl(data, count_tokens=words, max_tokens=7).ok


def test_tokens_are_not_counted_for_broken_examples():
    counted = []

    def count(example):
        counted.append(example)
        return 0

    validate_chat_jsonl(replaced(1, chat(user())), count_tokens=count, max_tokens=10)
    assert len(counted) == 11


def test_a_counter_may_refuse_an_example():
    def refuse(example):
        raise ValueError("roles must alternate\nmore detail")

    report = validate_chat_jsonl(jsonl(LINES[0]), min_examples=1, count_tokens=refuse, max_tokens=9)
    assert reasons(report) == [(1, "cannot count tokens: roles must alternate")]


def test_counter_and_maximum_go_together():
    with pytest.raises(ValueError, match="go together"):
        validate_chat_jsonl(XBOX.encode(), count_tokens=words)
    with pytest.raises(ValueError, match="go together"):
        validate_chat_jsonl(XBOX.encode(), max_tokens=10)


def test_example_lines_match_the_validator():
    data = b"\xef\xbb\xbf" + "\r\n".join(LINES).encode() + b"\r\n"
    assert example_lines(data) == LINES


# --- the tokenizer --------------------------------------------------------------------------


class FakeTokenizer:
    chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    loaded: ClassVar[list[tuple[str, dict[str, object]]]] = []

    @classmethod
    def from_pretrained(cls, name, **kwargs):
        if name == "missing":
            raise OSError("We couldn't connect to 'https://huggingface.co'\nmore")
        cls.loaded.append((name, kwargs))
        tokenizer = cls()
        if name == "no-template":
            tokenizer.chat_template = None
        return tokenizer

    def apply_chat_template(self, messages, tokenize):
        assert tokenize
        ids = [0] * sum(len(m["content"].split()) + 2 for m in messages)
        # transformers 5 answers a BatchEncoding (a mapping); 4 the list of ids.
        return {"input_ids": ids} if len(messages) > 2 else ids


@pytest.fixture
def fake_transformers(monkeypatch):
    transformers = types.ModuleType("transformers")
    transformers.AutoTokenizer = FakeTokenizer  # type: ignore[attr-defined]
    jinja2 = types.ModuleType("jinja2")
    jinja2.TemplateError = type("TemplateError", (Exception,), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "transformers", transformers)
    monkeypatch.setitem(sys.modules, "jinja2", jinja2)
    FakeTokenizer.loaded = []
    return FakeTokenizer


def test_token_counter_applies_the_chat_template_offline(fake_transformers):
    count = load_token_counter("/models/phi")
    assert fake_transformers.loaded == [("/models/phi", {"local_files_only": True})]
    assert count(json.loads(chat(user("a b"), bot("c")))) == 7
    assert count(json.loads(chat(user("a"), bot("b"), user("c")))) == 9


@pytest.mark.parametrize(
    ("model", "message"),
    [
        pytest.param(
            "missing",
            "cannot load the tokenizer of missing: not available locally (downloads are off): "
            "We couldn't connect to 'https://huggingface.co'",
            id="not-local",
        ),
        pytest.param(
            "no-template",
            "cannot load the tokenizer of no-template: it has no chat template",
            id="x",
        ),
    ],
)
def test_token_counter_errors(fake_transformers, model, message):
    with pytest.raises(TokenizerUnavailable) as e:
        load_token_counter(model)
    assert str(e.value) == message


def test_token_counter_without_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(TokenizerUnavailable, match="transformers is not installed"):
        load_token_counter("microsoft/Phi-3-mini-4k-instruct")


def test_importing_the_module_does_not_import_transformers():
    code = "import sys, kubetune.datavalidation; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- the split ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "fraction", "held_out"),
    [
        pytest.param(12, 0.1, 1, id="rounded-down"),
        pytest.param(15, 0.1, 2, id="half-up"),
        pytest.param(100, 0.29, 29, id="as-written"),
        pytest.param(10, 0.01, 1, id="at-least-one"),
        pytest.param(3, 0.9, 2, id="training-keeps-one"),
        pytest.param(2, 0.5, 1, id="two"),
    ],
)
def test_split_sizes(n, fraction, held_out):
    items = list(range(n))
    training, validation = split_examples(items, fraction, seed=1)
    assert len(validation) == held_out
    assert sorted(training + validation) == items
    assert training == sorted(training)
    assert validation == sorted(validation)


def test_split_is_deterministic_per_seed():
    assert split_examples(LINES, 0.25, seed=42) == split_examples(list(LINES), 0.25, seed=42)
    splits = {tuple(split_examples(range(50), 0.2, seed=s)[1]) for s in range(5)}
    assert len(splits) == 5
    # Pinned: the split must not change between releases or Python versions.
    assert split_examples(range(10), 0.3, seed=0)[1] == [4, 7, 9]


@pytest.mark.parametrize(("n", "fraction"), [(1, 0.1), (0, 0.1), (10, 0.0), (10, 1.0), (10, -0.1)])
def test_split_rejects(n, fraction):
    with pytest.raises(ValueError, match=r"at least 2|fraction"):
        split_examples(list(range(n)), fraction, seed=0)


# --- the CLI --------------------------------------------------------------------------------


@pytest.fixture
def train(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(XBOX)
    return path


def test_cli_clean(train, capsys):
    assert cli.main(["validate-data", str(train)]) == 0
    assert capsys.readouterr().out == f"{train}: training, 12 example(s), ok\n"


def test_cli_reports_problems(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(jsonl(*LINES[:8], "{"))
    assert cli.main(["validate-data", str(bad)]) == BAD_INPUT_EXIT_CODE == 65
    assert capsys.readouterr().out.splitlines() == [
        f"{bad}:9: invalid JSON: Expecting property name enclosed in double quotes at column 2",
        f"{bad}: 9 examples; at least 10 required",
        f"{bad}: training, 9 example(s), 2 problem(s)",
    ]


def test_cli_validation_file(train, tmp_path, capsys):
    validation = tmp_path / "validation.jsonl"
    validation.write_bytes(jsonl(*LINES[:2]))
    assert cli.main(["validate-data", str(train), "--validation", str(validation)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{train}: training, 12 example(s), ok",
        f"{validation}: validation, 2 example(s), ok",
    ]
    validation.write_bytes(b"")
    assert cli.main(["validate-data", str(train), "--validation", str(validation)]) == 65
    assert f"{validation}: 0 examples; at least 1 required" in capsys.readouterr().out


def test_cli_json(train, tmp_path, capsys):
    validation = tmp_path / "validation.jsonl"
    validation.write_bytes(jsonl(LINES[0], chat(user())))
    args = ["validate-data", str(train), "--validation", str(validation), "--json"]
    assert cli.main(args) == 65
    assert json.loads(capsys.readouterr().out) == {
        "ok": False,
        "training": {"path": str(train), "ok": True, "examples": 12, "problems": []},
        "validation": {
            "path": str(validation),
            "ok": False,
            "examples": 2,
            "problems": [{"line": 2, "reason": "no assistant message"}],
        },
    }
    assert cli.main(["validate-data", str(train), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "ok": True,
        "training": {"path": str(train), "ok": True, "examples": 12, "problems": []},
    }


def test_cli_file_level_problem_in_json(tmp_path, capsys):
    small = tmp_path / "small.jsonl"
    small.write_bytes(jsonl(LINES[0]))
    assert cli.main(["validate-data", str(small), "--json"]) == 65
    problems = json.loads(capsys.readouterr().out)["training"]["problems"]
    assert problems == [{"line": None, "reason": "1 example; at least 10 required"}]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(["--model", "m"], "--model and --max-tokens go together", id="model-alone"),
        pytest.param(["--max-tokens", "9"], "--model and --max-tokens go together", id="max"),
        pytest.param(["--model", "m", "--max-tokens", "0"], "at least 1", id="max-0"),
    ],
)
def test_cli_usage_errors(train, capsys, extra, message):
    assert cli.main(["validate-data", str(train), *extra]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


def test_cli_missing_file(tmp_path, train, capsys):
    assert cli.main(["validate-data", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err
    args = ["validate-data", str(train), "--validation", str(tmp_path / "nope.jsonl"), "--json"]
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    assert "nope.jsonl" in captured.err
    assert captured.out == ""


def test_cli_model_without_transformers(train, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)
    assert cli.main(["validate-data", str(train), "--model", "phi", "--max-tokens", "99"]) == 2
    assert capsys.readouterr().err == (
        "kubetune validate-data: cannot load the tokenizer of phi: "
        "transformers is not installed (pip install 'kubetune[train]')\n"
    )


def test_cli_model_counts_tokens(train, fake_transformers, capsys):
    args = ["validate-data", str(train), "--model", "/models/phi", "--max-tokens", "60"]
    code = cli.main(args)
    out = capsys.readouterr().out.splitlines()
    assert fake_transformers.loaded == [("/models/phi", {"local_files_only": True})]
    # The 60-token limit catches the longer Xbox examples (words + 2 per message here).
    assert code == 65
    assert out[:-1]
    assert all(" tokens, over the maximum of 60" in line for line in out[:-1])
    args[-1] = "1000"
    assert cli.main(args) == 0


def test_problem_is_a_plain_value():
    assert Problem(3, "x") == Problem(3, "x")
    assert Report(1).ok
    assert not Report(1, [Problem(None, "x")]).ok
