"""Trainer data handling: assistant-only targets, batching, the split, the hyper-parameter plan."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")


import torch

from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.trainer.data import (
    IGNORE,
    collate,
    collate_flat,
    load_datasets,
    plan_epoch,
    shard,
    tokenize_all,
    tokenize_example,
)
from kubetune.trainer.errors import BadInput
from kubetune.trainer.plan import build_plan, learning_rate_factor
from kubetune.trainer.tinymodel import build_chat_examples, build_tiny_tokenizer

SYSTEM = {"role": "system", "content": "You are an Xbox support agent."}
CONVERSATIONS = [
    [SYSTEM, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    [
        {"role": "user", "content": "My controller keeps disconnecting."},
        {"role": "assistant", "content": "Re-pair it.", "weight": 0},
        {"role": "user", "content": "Still broken."},
        {"role": "assistant", "content": "Press the pair button for 3 seconds."},
    ],
    [
        SYSTEM,
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": "Two"},
        {"role": "user", "content": "Three"},
        {"role": "assistant", "content": "Four, five and six."},
    ],
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def spec(**hyperparameters: object) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate(
        {
            "baseModel": "m",
            "dataset": {"training": {"url": "http://x"}},
            "hyperparameters": hyperparameters,
        }
    )


def trained_text(tokenizer, messages) -> str:
    example = tokenize_example(tokenizer, messages)
    return tokenizer.decode([t for t in example.targets if t != IGNORE])


@pytest.mark.parametrize("messages", CONVERSATIONS, ids=["one-turn", "weight-0", "multi-turn"])
def test_targets_match_the_templates_generation_mask(tokenizer, messages):
    """Our offset-based marks agree with the template's own {% generation %} mask."""
    example = tokenize_example(tokenizer, messages)
    reference = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert example.input_ids == reference["input_ids"]
    trained_positions = [i + 1 for i, t in enumerate(example.targets) if t != IGNORE]
    marked_positions = [i for i, m in enumerate(reference["assistant_masks"]) if m]
    assert trained_positions == marked_positions


def test_only_weighted_assistant_content_is_trained(tokenizer):
    assert trained_text(tokenizer, CONVERSATIONS[0]) == "Hello!<|end|>"
    assert (
        trained_text(tokenizer, CONVERSATIONS[1]) == "Press the pair button for 3 seconds.<|end|>"
    )
    assert trained_text(tokenizer, CONVERSATIONS[2]) == "Two<|end|>Four, five and six.<|end|>"


def test_targets_are_next_tokens(tokenizer):
    example = tokenize_example(tokenizer, CONVERSATIONS[2])
    for i, target in enumerate(example.targets):
        assert target in (
            IGNORE,
            example.input_ids[i + 1] if i + 1 < len(example.input_ids) else -1,
        )
    assert example.targets[-1] == IGNORE


def test_template_without_generation_markers(tokenizer):
    """Phi-3-mini's real template has no {% generation %}: the offsets still find the answer."""
    plain = build_tiny_tokenizer()
    plain.chat_template = (
        "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}"
        "{% else %}{{ eos_token }}{% endif %}"
    )
    # Neither the newlines between turns nor the eos that closes the conversation.
    assert trained_text(plain, CONVERSATIONS[2]) == "Two<|end|>Four, five and six.<|end|>"


def test_too_long_examples_are_bad_input(tokenizer):
    raw = [(n, m) for n, m in enumerate(CONVERSATIONS, start=1)]
    with pytest.raises(BadInput) as caught:
        tokenize_all(tokenizer, raw, path="t.jsonl", max_tokens=20)
    assert caught.value.problems[0].startswith("t.jsonl:1: ")
    assert caught.value.problems[0].endswith("tokens, over the maximum of 20")
    assert len(caught.value.problems) == 3


def write(path: Path, examples: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return path


def test_split_is_seeded_and_keeps_line_numbers(tmp_path):
    path = write(tmp_path / "t.jsonl", build_chat_examples(40))
    a = load_datasets(path, None, split=0.1, seed=7)
    b = load_datasets(path, None, split=0.1, seed=7)
    c = load_datasets(path, None, split=0.1, seed=8)
    assert a == b
    assert [n for n, _ in a.validation] != [n for n, _ in c.validation]
    assert len(a.validation) == 4
    lines = sorted(n for n, _ in a.training + a.validation)
    assert lines == list(range(1, 41))


def test_validation_file_is_used_as_is(tmp_path):
    train = write(tmp_path / "t.jsonl", build_chat_examples(12))
    val = write(tmp_path / "v.jsonl", build_chat_examples(2, seed=5))
    raw = load_datasets(train, val, split=0.1, seed=0)
    assert (len(raw.training), len(raw.validation)) == (12, 2)


def test_bad_files_report_every_problem(tmp_path):
    train = write(tmp_path / "t.jsonl", build_chat_examples(12))
    with train.open("a") as f:
        f.write('{"messages": []}\nnot json\n')
    val = tmp_path / "v.jsonl"
    val.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(BadInput) as caught:
        load_datasets(train, val, split=0.1, seed=0)
    assert caught.value.problems == [
        f"{train}:13: messages is empty",
        f"{train}:14: invalid JSON: Expecting value at column 1",
        f"{val}:1: no assistant message",
    ]


def test_plan_epoch_groups_lengths_and_covers_everything():
    lengths = [(i * 37) % 101 for i in range(203)]
    batches = plan_epoch(lengths, batch=8, epoch=0, seed=1)
    assert batches == plan_epoch(lengths, batch=8, epoch=0, seed=1)
    assert batches != plan_epoch(lengths, batch=8, epoch=1, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(203))
    for b in batches:
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
    # Grouping by length: far less padding than batches in random order.
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 1.1 * sum(lengths)


def test_plan_epoch_drops_remainders_too_small_to_share():
    batches = plan_epoch([5] * 17, batch=8, epoch=0, seed=0, drop_remainder=2)
    assert sorted(len(b) for b in batches) == [8, 8]


@pytest.mark.parametrize(("n", "parts"), [(8, 2), (7, 2), (5, 3), (2, 2)])
def test_shard_is_a_partition(n, parts):
    items = list(range(n))
    shards = [shard(items, parts, i) for i in range(parts)]
    assert [x for s in shards for x in s] == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_collate_pads_right_and_flat_restarts_positions(tokenizer):
    examples = [tokenize_example(tokenizer, m) for m in CONVERSATIONS]
    padded = collate(examples, pad_id=0)
    width = max(len(e.input_ids) for e in examples)
    assert padded["input_ids"].shape == (3, width)
    assert padded["attention_mask"].sum().item() == sum(len(e.input_ids) for e in examples)
    assert (padded["targets"][padded["attention_mask"] == 0] == IGNORE).all()
    flat = collate_flat(examples)
    assert flat["input_ids"].shape == (1, sum(len(e.input_ids) for e in examples))
    starts = (flat["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert starts == [
        0,
        len(examples[0].input_ids),
        len(examples[0].input_ids) + len(examples[1].input_ids),
    ]
    assert torch.equal(
        flat["targets"][flat["targets"] != IGNORE], padded["targets"][padded["targets"] != IGNORE]
    )


def test_plan_defaults_and_foundry_multipliers():
    default = build_plan(spec())
    assert (default.learning_rate, default.batch_size, default.accumulation) == (2e-4, 8, 1)
    assert (default.epochs, default.seed, default.validation_split) == (3, 42, 0.1)
    scaled = build_plan(spec(learningRateMultiplier=0.5, batchSizeMultiplier=2))
    assert (scaled.learning_rate, scaled.batch_size) == (1e-4, 16)
    assert build_plan(spec(batchSizeMultiplier=0.01)).batch_size == 1
    explicit = build_plan(spec(learningRate=0.001, batchSize=3, gradientAccumulationSteps=8))
    assert (explicit.learning_rate, explicit.batch_size, explicit.accumulation) == (0.001, 3, 3)


def test_plan_steps_and_schedule():
    plan = build_plan(spec(batchSize=8))
    assert plan.steps_per_epoch(200, 1) == 25
    assert plan.steps_per_epoch(203, 1) == 26
    assert plan.steps_per_epoch(203, 2) == 13  # 203 = 12 * 16 + 11: the remainder is shared
    assert plan.steps_per_epoch(17, 2) == 1  # 17 = 16 + 1: one example cannot be shared
    factors = [learning_rate_factor(s, warmup=2, total=10) for s in range(10)]
    assert factors[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert factors[-1] == pytest.approx(1 / 8)
    assert all(a >= b for a, b in itertools.pairwise(factors[2:]))
