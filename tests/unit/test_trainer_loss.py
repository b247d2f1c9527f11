"""The training loss: assistant tokens only, the same padded, padding-free or accumulated."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("peft")

import torch

from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.trainer import loop
from kubetune.trainer.data import IGNORE, collate, collate_flat, tokenize_example
from kubetune.trainer.modeling import build_runtime, load_model, load_tokenizer
from kubetune.trainer.plan import build_plan
from kubetune.trainer.tinymodel import build_chat_examples, build_tiny_model

MESSAGES = [
    {"role": "system", "content": "You are an Xbox support agent."},
    {"role": "user", "content": "My controller keeps disconnecting."},
    {"role": "assistant", "content": "Re-pair it.", "weight": 0},
    {"role": "user", "content": "Still broken."},
    {"role": "assistant", "content": "Press the pair button."},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    tokenizer = load_tokenizer(str(directory))
    spec = FineTuneJobSpec.model_validate(
        {"baseModel": "m", "dataset": {"training": {"url": "http://x"}}, "lora": {"dropout": 0}}
    )
    model = load_model(str(directory), build_plan(spec), build_runtime(0))
    model.eval()
    return tokenizer, model


def test_system_and_user_tokens_carry_no_loss(tiny):
    """The gradient of the loss reaches the logits of assistant positions only."""
    tokenizer, model = tiny
    example = tokenize_example(tokenizer, MESSAGES)
    ids = torch.tensor([example.input_ids])
    logits = model(input_ids=ids, use_cache=False).logits.detach().requires_grad_(True)
    targets = torch.tensor(example.targets)
    selected = targets != IGNORE
    loss = torch.nn.functional.cross_entropy(
        logits[0][selected], targets[selected], reduction="sum"
    )
    loss.backward()
    carrying = (logits.grad[0].abs().sum(dim=-1) > 0).nonzero().flatten().tolist()
    predicted = tokenizer.decode([example.input_ids[i + 1] for i in carrying])
    assert predicted == "Press the pair button.<|end|>"
    # Changing the system and user texts changes no target: they are context only.
    other = [dict(m) for m in MESSAGES]
    other[0]["content"] = "Answer in French."
    other[3]["content"] = "It is still broken!!"
    changed = tokenize_example(tokenizer, other)
    assert [t for t in changed.targets if t != IGNORE] == [
        t for t in example.targets if t != IGNORE
    ]


def test_token_loss_equals_reference_cross_entropy(tiny):
    """Logits on the target positions only give the loss of the full forward pass."""
    tokenizer, model = tiny
    short = [*MESSAGES[:2], {"role": "assistant", "content": "Try new batteries."}]
    batch = collate([tokenize_example(tokenizer, m) for m in (MESSAGES, short)], pad_id=0)
    module = loop.TokenLoss(model).eval()
    with torch.no_grad():
        loss, correct = module(**batch)
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).logits
    wanted = batch["targets"] != IGNORE
    expected = torch.nn.functional.cross_entropy(
        logits[wanted], batch["targets"][wanted], reduction="sum"
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert correct.item() == (logits[wanted].argmax(-1) == batch["targets"][wanted]).sum().item()


def test_padding_free_batches_give_the_padded_loss(tiny):
    """Position ids restarting per example keep packed examples apart (use_cache=False)."""
    tokenizer, model = tiny
    examples = [tokenize_example(tokenizer, e["messages"]) for e in build_chat_examples(5)]
    module = loop.TokenLoss(model).eval()
    with torch.no_grad():
        padded, _ = module(**collate(examples, pad_id=0))
        flat, _ = module(**collate_flat(examples))
    assert flat.item() == pytest.approx(padded.item(), rel=1e-4)


def test_accumulation_gives_the_same_update_as_one_batch(tiny):
    tokenizer, model = tiny
    examples = [tokenize_example(tokenizer, e["messages"]) for e in build_chat_examples(6)]
    tokens = sum(e.trained_tokens for e in examples)
    params = [p for p in model.parameters() if p.requires_grad]
    module = loop.TokenLoss(model).train()
    grads = []
    for parts in (1, 3):
        for p in params:
            p.grad = None
        for batch in loop.build_micro_batches(examples, parts, pad_id=0, padding_free=False):
            loss, _ = module(**batch)
            (loss / tokens).backward()
        grads.append(torch.cat([p.grad.flatten() for p in params]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7)


def test_evaluate_reports_mean_loss_and_accuracy(tiny):
    tokenizer, model = tiny
    examples = [tokenize_example(tokenizer, e["messages"]) for e in build_chat_examples(7)]
    loss, accuracy = loop.evaluate(
        loop.TokenLoss(model),
        examples,
        batch_size=3,
        pad_id=0,
        world=loop.World(),
        runtime=build_runtime(0),
    )
    # Random weights over an 896-token vocabulary: about ln(896) and near-zero accuracy.
    assert abs(loss - math.log(896)) < 1.0
    assert 0 <= accuracy < 0.1


def test_cpu_dropout_is_inverted_dropout_with_rate_p():
    dropout = loop.CpuDropout(0.05).train()
    x = torch.ones(4, 1000, 129, requires_grad=True)  # an odd size: the last draw is cut
    torch.manual_seed(0)
    y = dropout(x)
    kept = y != 0
    assert y[kept].unique().tolist() == [pytest.approx(1 / 0.95)]
    assert 1 - kept.float().mean().item() == pytest.approx(0.05, abs=0.002)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient goes through the kept elements
    torch.manual_seed(0)
    assert torch.equal(dropout(x), y)  # the torch seed fixes the mask
    assert dropout.eval()(x) is x


def test_cpu_dropout_replaces_the_adapter_dropout(tmp_path):
    directory = build_tiny_model(tmp_path / "model")
    spec = FineTuneJobSpec.model_validate(
        {"baseModel": "m", "dataset": {"training": {"url": "http://x"}}}
    )
    model = load_model(str(directory), build_plan(spec), build_runtime(0))
    replaced = loop.use_cpu_dropout(model)
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    # One per LoRA-wrapped projection; the model's own have p=0 and are left alone.
    assert replaced == sum(isinstance(m, loop.CpuDropout) for m in dropouts) > 0
    assert all(m.p == 0.05 for m in dropouts if isinstance(m, loop.CpuDropout))
