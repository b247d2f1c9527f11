"""Training data: validated JSONL -> token ids with assistant-only targets -> batches.

- `load_datasets` reads the training (and validation) file, runs
  `kubetune.datavalidation` on it (raising `BadInput` with every problem), and
  holds out a seeded validation split when there is no validation file.
- `tokenize_example` applies the tokenizer's chat template and marks the tokens
  that carry loss: the content and end of each assistant message whose weight is
  not 0. System, user and the `<|assistant|>` header never carry loss. The marks
  come from character spans of the rendered text (rendering the conversation
  prefix by prefix) mapped onto tokens through the fast tokenizer's offsets, so
  any prefix-consistent chat template works, including ones without
  `{% generation %}` markers (Phi-3-mini's own has none).
- `plan_epoch` orders an epoch's examples: a seeded shuffle, then grouping by
  length inside mega-batches so that a batch pads little, then a seeded shuffle
  of the batches. `collate` pads a micro-batch; `collate_flat` concatenates it
  into one row with restarting position ids (padding-free, for varlen attention).

Nothing here imports torch at module level except for `collate*`, which build tensors.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune import datavalidation as dv
from kubetune.trainer.errors import BadInput

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

IGNORE = -100
"""Target of a position that carries no loss (the cross-entropy ignore index)."""

MEGA_BATCH = 50
"""Batches per length-sorted group (as transformers' group_by_length)."""


@dataclass(frozen=True)
class Example:
    """One tokenized conversation. `targets[i]` is the token to predict at position i."""

    input_ids: list[int]
    targets: list[int]
    line: int
    """1-based line in its file, for error messages."""

    @property
    def trained_tokens(self) -> int:
        return sum(t != IGNORE for t in self.targets)


@dataclass(frozen=True)
class RawData:
    """Parsed, validated examples (the `messages` lists) with their line numbers."""

    training: list[tuple[int, list[dict[str, Any]]]]
    validation: list[tuple[int, list[dict[str, Any]]]]
    validation_name: str


def load_datasets(training: Path, validation: Path | None, *, split: float, seed: int) -> RawData:
    """Validates the files and returns their examples; `split` applies without `validation`.

    Raises BadInput listing every problem of every file.
    """
    problems: list[str] = []
    files = [(training, dv.MIN_EXAMPLES)]
    if validation is not None:
        files.append((validation, 1))
    for path, minimum in files:
        report = dv.validate_chat_jsonl(path, min_examples=minimum)
        problems.extend(_describe(path, p) for p in report.problems)
    if problems:
        raise BadInput(problems)
    train = _parse(training)
    if validation is not None:
        return RawData(train, _parse(validation), str(validation))
    kept, held_out = dv.split_examples(train, split, seed)
    return RawData(kept, held_out, f"{split:g} of {training} (seed {seed})")


def tokenize_all(
    tokenizer: PreTrainedTokenizerBase,
    raw: Sequence[tuple[int, list[dict[str, Any]]]],
    *,
    path: str,
    max_tokens: int,
) -> list[Example]:
    """Tokenizes every example; too long ones (over `max_tokens`) raise BadInput, all listed."""
    examples: list[Example] = []
    problems: list[str] = []
    for line, messages in raw:
        try:
            example = tokenize_example(tokenizer, messages, line=line)
        except ValueError as e:
            problems.append(_describe(path, dv.Problem(line, f"cannot tokenize: {e}")))
            continue
        if len(example.input_ids) > max_tokens:
            reason = f"{len(example.input_ids)} tokens, over the maximum of {max_tokens}"
            problems.append(_describe(path, dv.Problem(line, reason)))
        examples.append(example)
    if problems:
        raise BadInput(problems)
    return examples


def tokenize_example(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], *, line: int = 0
) -> Example:
    """Token ids of the templated conversation and its assistant-only next-token targets.

    Raises ValueError when the template cannot render the messages or renders
    them in a way that is not prefix-consistent.
    """
    template_error = _template_error()
    try:
        full = _render(tokenizer, messages, generation_prompt=False)
        ids, offsets = _encode(tokenizer, full)
        spans = list(_assistant_spans(tokenizer, messages, full, ids, offsets))
    except template_error as e:
        raise ValueError(f"the chat template rejects it: {e}") from e
    trained = [
        any(start < s_end and s_start < end for s_start, s_end in spans) for start, end in offsets
    ]
    # Position i predicts token i + 1: it carries loss when token i + 1 is trained.
    targets = [ids[i + 1] if trained[i + 1] else IGNORE for i in range(len(ids) - 1)]
    targets.append(IGNORE)
    return Example(ids, targets, line)


def _assistant_spans(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    full: str,
    ids: list[int],
    offsets: list[tuple[int, int]],
) -> Iterator[tuple[int, int]]:
    """Character spans of the trained assistant turns in `full`.

    A span starts where the generation prompt (`<|assistant|>\n` for Phi-3)
    ends and covers the message's content and the special tokens right after it
    (the end-of-turn token: `<|end|>`, `<|eot_id|>`, `<|im_end|>`, `</s>`), but
    not the template's separators (a newline) or a closing eos after a newline.
    When the template changes the content (so it cannot be found), the span runs
    to the end of what the conversation cut after this message shares with the
    whole conversation.
    """
    specials = set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if t.special
    }
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        prompt = _render(tokenizer, messages[:i], generation_prompt=True)
        upto = _render(tokenizer, messages[: i + 1], generation_prompt=False)
        shared = _common_prefix(_encode(tokenizer, upto)[0], ids)
        limit = offsets[shared - 1][1] if shared else 0
        if not full.startswith(prompt) or limit <= len(prompt):
            raise ValueError("the chat template does not render conversations prefix by prefix")
        content = str(message["content"])
        at = full.find(content, len(prompt))
        if at < 0 or at + len(content) > limit:
            yield len(prompt), limit
            continue
        end = at + len(content)
        for j in range(shared):
            if offsets[j][0] >= end:
                if ids[j] not in specials:
                    break
                end = offsets[j][1]
        yield len(prompt), end


def plan_epoch(
    lengths: Sequence[int], *, batch: int, epoch: int, seed: int, drop_remainder: int = 1
) -> list[list[int]]:
    """Example indices of each global batch of one epoch, the same for the same arguments.

    Batches hold `batch` examples (the last may hold fewer, but at least
    `drop_remainder`: a smaller remainder is dropped, so every data-parallel
    rank gets at least one example). Inside a batch, indices are longest first.
    """
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    group = batch * MEGA_BATCH
    for start in range(0, len(order), group):
        chunk = sorted(order[start : start + group], key=lambda i: -lengths[i])
        batches.extend(chunk[i : i + batch] for i in range(0, len(chunk), batch))
    batches = [b for b in batches if len(b) >= drop_remainder]
    rng.shuffle(batches)
    return batches


def shard(items: Sequence[int], parts: int, index: int) -> list[int]:
    """Part `index` of `parts` nearly equal contiguous parts of `items` (sizes differ by <= 1)."""
    size, extra = divmod(len(items), parts)
    start = index * size + min(index, extra)
    return list(items[start : start + size + (1 if index < extra else 0)])


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """A right-padded micro-batch: input_ids, attention_mask, targets (B, T)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    targets = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        targets[row, :n] = torch.tensor(e.targets)
    return {"input_ids": ids, "attention_mask": mask, "targets": targets}


def collate_flat(examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    """A padding-free micro-batch: one row, position ids restarting at each example.

    Only correct with `attention_mask=None` and `use_cache=False`, where
    transformers derives the sequence boundaries from the position ids.
    """
    import torch

    ids = [t for e in examples for t in e.input_ids]
    positions = [p for e in examples for p in range(len(e.input_ids))]
    targets = [t for e in examples for t in e.targets]
    return {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([positions]),
        "targets": torch.tensor([targets]),
    }


def _render(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], *, generation_prompt: bool
) -> str:
    if not messages:
        return ""
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )
    if not isinstance(text, str):
        raise ValueError("the chat template did not render text")
    return text


def _encode(
    tokenizer: PreTrainedTokenizerBase, text: str
) -> tuple[list[int], list[tuple[int, int]]]:
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _template_error() -> type[Exception]:
    from jinja2 import TemplateError

    return TemplateError


def _parse(path: Path) -> list[tuple[int, list[dict[str, Any]]]]:
    # Validated files have no blank lines, so the n-th non-blank line is line n.
    out: list[tuple[int, list[dict[str, Any]]]] = []
    for number, text in enumerate(dv.example_lines(path), start=1):
        example: Mapping[str, Any] = json.loads(text)
        out.append((number, list(example["messages"])))
    return out


def _describe(path: Path | str, problem: dv.Problem) -> str:
    return (
        f"{path}: {problem.reason}"
        if problem.line is None
        else f"{path}:{problem.line}: {problem.reason}"
    )
