"""The tiny locally built Phi-3 that the trainer tests (and the serving tests) use."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM, AutoTokenizer

from kubetune.trainer.tinymodel import SPECIAL_TOKENS, VOCAB_SIZE, build_tiny_model

MESSAGES = [
    {"role": "system", "content": "You are an Xbox support agent."},
    {"role": "user", "content": "My controller keeps disconnecting."},
    {"role": "assistant", "content": "Let's re-pair it.", "weight": 0},
    {"role": "user", "content": "Still broken."},
    {"role": "assistant", "content": "Press the pair button."},
]


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


def test_loads_offline_with_small_vocab(tmp_path):
    directory = build_tiny_model(tmp_path / "m")
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
    assert type(model).__name__ == "Phi3ForCausalLM"
    assert len(tokenizer) == VOCAB_SIZE == model.config.vocab_size
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3, 4]
    assert (model.config.pad_token_id, model.config.eos_token_id) == (0, 4)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_deterministic_per_seed(tmp_path):
    a = digests(build_tiny_model(tmp_path / "a", seed=3))
    b = digests(build_tiny_model(tmp_path / "b", seed=3))
    c = digests(build_tiny_model(tmp_path / "c", seed=4))
    assert a == b
    assert a["model.safetensors"] != c["model.safetensors"]
    assert a["tokenizer.json"] == c["tokenizer.json"]


def test_chat_template_marks_weighted_assistant_turns(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "m"))
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    assert text.startswith("<|system|>\nYou are an Xbox support agent.<|end|>\n<|user|>\n")
    out = tokenizer.apply_chat_template(
        MESSAGES, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids = out["input_ids"]
    marked = [i for i, m in zip(ids, out["assistant_masks"], strict=True) if m]
    # Only the weight-1 answer, with its end token, is marked.
    assert tokenizer.decode(marked) == "Press the pair button.<|end|>"
    prompt = tokenizer.apply_chat_template(MESSAGES[:2], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|assistant|>\n")
