"""Checks chat-completion JSONL training data the way Azure AI Foundry defines it.

Foundry's serverless fine-tuning takes JSONL with one example per line,
`{"messages": [{"role": ..., "content": ...}, ...]}`, and rejects a file only after
the upload, often with a vague message. The local trainer reads the same format.
So we check the rules before anything is submitted, and report every problem
at once, each with its 1-based line number and a one-line reason:

- the file is UTF-8 (a leading BOM is tolerated) and smaller than 512 MiB;
- every line is one JSON object with a `messages` list that is not empty;
- each message is an object with `role` (system, user or assistant), a `content`
  string that is not blank and, on assistant messages only, an optional
  `weight` of 0 or 1; other keys on a message are reported. Other top-level
  keys of an example are not checked;
- an example has an assistant message, the last message is the assistant's,
  and not every assistant message has weight 0 (nothing would be trained);
- the training file has at least 10 examples (Foundry's minimum; the caller
  picks the minimum, e.g. 1 for a validation file);
- no example appears twice (the same JSON, whitespace aside): the later line
  is reported with the line number of the first;
- with a `count_tokens` callable (see `load_token_counter`), no example is longer
  than `max_tokens` once the chat template is applied.

Blank lines are reported: JSONL has no empty records, and a blank line in the
middle usually means a broken export. One newline at the end of the file is
fine, and so is none; `\\r\\n` line ends are accepted. `Report.examples` counts the
lines that are not blank, valid or not.

Also here: `split_examples`, the seeded split that holds out validation examples
when no validation file is given, and `BAD_INPUT_EXIT_CODE`, the exit code of the
trainer and of `kubetune validate-data` when the data is invalid. Nothing here
talks to Kubernetes or to Foundry, and transformers is imported only by
`load_token_counter`, when called.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

BAD_INPUT_EXIT_CODE = 65
"""Exit code for invalid data: sysexits' EX_DATAERR. A retry cannot help."""

MIN_EXAMPLES = 10
MAX_FILE_BYTES = 512 * 1024 * 1024
ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = frozenset({"role", "content", "weight"})

BOM = b"\xef\xbb\xbf"

TokenCounter = Callable[[Mapping[str, object]], int]
"""Tokens in one example (a parsed JSON line) once the chat template is applied.
It may raise ValueError to say the example cannot be tokenized; that is reported."""

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file: `line` is 1-based, None for the whole file."""

    line: int | None
    reason: str


@dataclass(frozen=True)
class Report:
    """The result of checking one file."""

    examples: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        """`{"ok", "examples", "problems": [{"line", "reason"}]}`, for JSON."""
        problems = [{"line": p.line, "reason": p.reason} for p in self.problems]
        return {"ok": self.ok, "examples": self.examples, "problems": problems}


class TokenizerUnavailable(Exception):
    """The tokenizer for `--model` cannot be loaded without downloading anything."""


def validate_chat_jsonl(
    source: bytes | os.PathLike[str],
    *,
    min_examples: int = MIN_EXAMPLES,
    count_tokens: TokenCounter | None = None,
    max_tokens: int | None = None,
) -> Report:
    """Checks chat-completion JSONL, given as bytes or a path, and reports all problems.

    Tokens are counted only when both `count_tokens` and `max_tokens` are given;
    giving one without the other is a programming error (ValueError). A missing
    file raises OSError.
    """
    if (count_tokens is None) != (max_tokens is None):
        raise ValueError("count_tokens and max_tokens go together")
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    problems: list[Problem] = []
    first_seen: dict[bytes, int] = {}
    examples = 0
    for number, raw in _numbered_lines(data):
        if not raw.strip():
            problems.append(Problem(number, "blank line"))
            continue
        examples += 1
        example, found = _check_line(raw)
        if example is not None:
            # A digest, not the text: files may be hundreds of megabytes.
            canonical = json.dumps(example, sort_keys=True, separators=(",", ":"))
            key = hashlib.sha256(canonical.encode()).digest()
            if key in first_seen:
                found.append(f"duplicate of line {first_seen[key]}")
            else:
                first_seen[key] = number
            if not found and count_tokens is not None and max_tokens is not None:
                found.extend(_check_length(example, count_tokens, max_tokens))
        problems.extend(Problem(number, reason) for reason in found)
    if len(data) >= MAX_FILE_BYTES:
        problems.append(Problem(None, f"file is {len(data)} bytes; Foundry takes under 512 MiB"))
    if examples < min_examples:
        problems.append(
            Problem(None, f"{_count(examples, 'example')}; at least {min_examples} required")
        )
    return Report(examples=examples, problems=problems)


def example_lines(source: bytes | os.PathLike[str]) -> list[str]:
    """The non-blank lines of a file, decoded, as `validate_chat_jsonl` sees them.

    Meant for valid files (e.g. to feed `split_examples`); invalid UTF-8 raises
    UnicodeDecodeError.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    return [raw.decode() for _, raw in _numbered_lines(data) if raw.strip()]


def split_examples(lines: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Splits examples into (training, validation), the same way for the same seed.

    Validation gets `fraction` of the examples rounded to the nearest whole
    number, halves up (0.1 of 15 is 2; the fraction is taken as written, so
    0.29 of 100 is 29), but at least 1, and training keeps at least 1. An
    example's side depends only on the seed, its position and the count: the
    examples with the lowest SHA-256 of `"{seed}:{index}"` are held out, which
    does not change between Python versions as `random` may. Both lists keep
    the input order. Fewer than 2 examples, or a fraction outside (0, 1), is
    a ValueError.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if len(lines) < 2:
        raise ValueError(f"need at least 2 examples to split, got {len(lines)}")
    wanted = math.floor(Fraction(repr(fraction)) * len(lines) + Fraction(1, 2))
    size = min(max(wanted, 1), len(lines) - 1)
    ranked = sorted(
        range(len(lines)),
        key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest(),
    )
    held_out = set(ranked[:size])
    training = [line for i, line in enumerate(lines) if i not in held_out]
    validation = [line for i, line in enumerate(lines) if i in held_out]
    return training, validation


def load_token_counter(model: str) -> TokenCounter:
    """A `TokenCounter` from a model's tokenizer and chat template, never downloading.

    `model` is a local directory or a Hugging Face id already in the local cache.
    transformers is imported here, not with this module. Raises
    TokenizerUnavailable when transformers is missing, the model is not available
    locally, or its tokenizer has no chat template.
    """
    prefix = f"cannot load the tokenizer of {model}"
    try:
        transformers = importlib.import_module("transformers")
    except ImportError as e:
        raise TokenizerUnavailable(
            f"{prefix}: transformers is not installed (pip install 'kubetune[train]')"
        ) from e
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model, local_files_only=True)
    except (OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TokenizerUnavailable(
            f"{prefix}: not available locally (downloads are off): {reason}"
        ) from e
    if not getattr(tokenizer, "chat_template", None):
        raise TokenizerUnavailable(f"{prefix}: it has no chat template")
    try:
        template_error: type[Exception] = importlib.import_module("jinja2").TemplateError
    except ImportError as e:
        raise TokenizerUnavailable(f"{prefix}: chat templates need jinja2") from e

    def count_tokens(example: Mapping[str, object]) -> int:
        try:
            ids = tokenizer.apply_chat_template(example["messages"], tokenize=True)
        except template_error as e:
            # Some templates reject role orders (e.g. user/assistant must alternate).
            raise ValueError(f"the chat template rejects it: {e}") from e
        # transformers 5 returns a BatchEncoding (a mapping); 4 returns the ids.
        if isinstance(ids, Mapping):
            ids = ids["input_ids"]
        return len(ids)

    return count_tokens


def _numbered_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(1-based number, line without its end) for each line; a final newline ends the file."""
    data = data.removeprefix(BOM)
    if not data:
        return
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        yield number, raw.removesuffix(b"\r")


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _check_line(raw: bytes) -> tuple[dict[str, object] | None, list[str]]:
    """The line's JSON object (None if it is not one) and what is wrong with it."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        return None, [f"invalid UTF-8 at byte {e.start + 1} of the line"]
    try:
        example = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        return None, [f"invalid JSON: {e.msg} at column {e.colno}"]
    except ValueError as e:  # NaN/Infinity, or an integer too long to parse
        return None, [f"invalid JSON: {e}"]
    except RecursionError:
        return None, ["invalid JSON: nested too deeply"]
    if not isinstance(example, dict):
        return None, [f"line is {_kind(example)}, not a JSON object"]
    if "messages" not in example:
        return example, ['no "messages" key']
    messages = example["messages"]
    if not isinstance(messages, list):
        return example, [f"messages must be a list, got {_kind(messages)}"]
    if not messages:
        return example, ["messages is empty"]
    return example, list(_check_messages(messages))


def _check_messages(messages: list[object]) -> Iterator[str]:
    roles: list[object] = []
    weights: list[object] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            yield f"{where} is {_kind(message)}, not an object"
            roles.append(None)
            continue
        role = message.get("role")
        roles.append(role)
        if "role" not in message:
            yield f"{where} has no role"
        elif role not in ROLES:
            yield f"{where}: role {_show(role)} is not one of {', '.join(ROLES)}"
        if "content" not in message:
            yield f"{where} has no content"
        elif not isinstance(message["content"], str):
            yield f"{where}: content must be a string, got {_kind(message['content'])}"
        elif not message["content"].strip():
            yield f"{where}: content is empty"
        if "weight" in message:
            weight = message["weight"]
            if role != "assistant":
                yield f"{where}: weight is only allowed on assistant messages"
            elif type(weight) is not int or weight not in (0, 1):
                yield f"{where}: weight must be 0 or 1, got {_show(weight)}"
            else:
                weights.append(weight)
        for key in sorted(set(message) - MESSAGE_KEYS):
            yield f"{where}: unknown key {_show(key)}"
    if "assistant" not in roles:
        yield "no assistant message"
    elif roles[-1] != "assistant":
        yield f"the last message is from {_show(roles[-1])}, not the assistant"
    elif roles.count("assistant") == weights.count(0):
        yield "every assistant message has weight 0: nothing to train on"


def _check_length(
    example: Mapping[str, object], count_tokens: TokenCounter, max_tokens: int
) -> Iterator[str]:
    try:
        tokens = count_tokens(example)
    except ValueError as e:
        yield f"cannot count tokens: {e}".splitlines()[0]
        return
    if tokens > max_tokens:
        yield f"{tokens} tokens, over the maximum of {max_tokens}"


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _show(value: object) -> str:
    """A short one-line rendering of a JSON value for a reason."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
