"""A tiny Phi-3 model and tokenizer, built locally, for tests and benchmarks.

`build_tiny_model(directory)` writes a complete Hugging Face model directory with
nothing downloaded:

- a byte-level BPE tokenizer trained on a small built-in corpus (Xbox-support
  English and chat markup), vocabulary `VOCAB_SIZE`, with the special tokens
  `<pad> <|system|> <|user|> <|assistant|> <|end|>` (ids 0-4, in that order) and
  a Phi-3-style chat template. The assistant's turn is wrapped in
  `{% generation %}`, so `apply_chat_template(..., return_assistant_tokens_mask=True)`
  works; a message with `"weight": 0` is rendered the same but left out of that
  mask;
- a `Phi3ForCausalLM` with random weights from a small `Phi3Config` (hidden 128,
  4 layers, 4 heads, intermediate 256, 512 positions; about 0.9M parameters),
  whose pad, bos and eos ids point into that vocabulary (`<pad>`, `<|end|>`,
  `<|end|>`).

The result is the same for the same seed (the tokenizer does not depend on the
seed at all). It is meant for CPU tests: the weights are random, so the model
says nothing sensible, but a LoRA fine-tune on it lowers the held-out loss within
a few dozen steps. It does not touch the network or the Hugging Face cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

VOCAB_SIZE = 896
SPECIAL_TOKENS = ("<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
PAD, SYSTEM, USER, ASSISTANT, END = SPECIAL_TOKENS

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}"
    "{% if message.get('weight', 1) == 0 %}"
    "{{ message['content'] + '<|end|>' }}"
    "{% else %}"
    "{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"
    "{% endif %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
"""Phi-3's layout (`<|role|>\\ncontent<|end|>\\n`), with generation markers."""

_CORPUS = """\
You are an Xbox customer support agent whose primary goal is to help users with issues
they are experiencing with their Xbox devices. You are friendly and concise. You only
provide factual answers to queries, and do not provide answers that are not related to Xbox.
Is Xbox better than PlayStation? I apologize, but I cannot provide personal opinions.
My primary job is to assist you with any issues related to your Xbox device.
Do you have any Xbox-related issues that need addressing?
Can I play PC games on my Xbox? While Xbox consoles don't natively support PC games,
they can play an array of Xbox games, many of which are also available on PC.
I'm having trouble connecting my Xbox to the Wi-Fi. No worries, let's go through the
network settings on your Xbox. Can you please tell me what happens when you try to connect?
My controller keeps disconnecting. Let's fix that. First, make sure the controller has fresh
batteries or is charged, then press the pair button on the console and on the controller.
How do I update my Xbox? Press the Xbox button, go to Profile & system > Settings > System >
Updates, and select the available console update. Keep the console connected to the internet.
My Xbox won't turn on. Let's check the power first: unplug the power cable for 10 seconds,
plug it back in directly to a wall outlet, and press the Xbox button on the console.
How do I redeem a gift card? Open Microsoft Store, choose Redeem, and enter the 25-character
code. The balance is added to your Microsoft account right away.
A game disc isn't being recognized. Please eject the disc, check it for scratches or smudges,
clean it with a soft cloth from the center outward, and insert it again.
How can I share games with my family? Set your console as your home Xbox under Settings >
General > Personalize > My home Xbox. Everyone who signs in on it can then play the games.
What's the weather like today? I'm sorry, I can only help with Xbox-related questions.
My game downloads are very slow. Try pausing other downloads, close running games, and use
a wired connection if you can. Test network speed & statistics.
How do I turn on parental controls? Use the Xbox Family Settings app or go to Settings >
Account > Family settings. There you can set content limits, screen time and spending rules.
The quick brown fox jumps over the lazy dog. Thank you for contacting support, have a great day!
Hello, how can I help you today? Please restart the console and try again. Is there anything
else I can help you with? Your headset, storage, cloud saves, achievements and Game Pass.
"""
"""Text the tokenizer learns its merges from: the seed's Xbox examples and some more."""


def build_tiny_model(directory: Path, *, seed: int = 0) -> Path:
    """Writes a tiny random-weight Phi-3 and its tokenizer into `directory`; returns it.

    `directory` is created if missing; existing files of the same names are
    replaced. Loads with `AutoModelForCausalLM.from_pretrained(directory)` and
    `AutoTokenizer.from_pretrained(directory)`.
    """
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    tokenizer.save_pretrained(directory)
    # The trainer puts the special tokens first, so their ids are their positions.
    pad, end = SPECIAL_TOKENS.index(PAD), SPECIAL_TOKENS.index(END)
    if tokenizer.convert_tokens_to_ids([PAD, END]) != [pad, end]:
        raise AssertionError("special token ids moved")
    config = Phi3Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        original_max_position_embeddings=512,
        pad_token_id=pad,
        bos_token_id=end,
        eos_token_id=end,
        tie_word_embeddings=False,
    )
    # fork_rng: building a model must not change the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Phi3ForCausalLM(config)
    model.generation_config.pad_token_id = pad
    model.generation_config.eos_token_id = end
    model.generation_config.bos_token_id = end
    model.save_pretrained(directory)
    return directory


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """The tokenizer of `build_tiny_model`, in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    # transformers 5 declares this constructor as (*args, **kwargs), without types.
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=END,
        bos_token=END,
        additional_special_tokens=[SYSTEM, USER, ASSISTANT],
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
        padding_side="right",
    )


XBOX_SYSTEM = (
    "You are an Xbox customer support agent whose primary goal is to help users with issues "
    "they are experiencing with their Xbox devices. You are friendly and concise. You only "
    "provide factual answers to queries, and do not provide answers that are not related to Xbox."
)

_PROBLEMS = (
    ("My controller keeps disconnecting", "re-pair the controller with the pair buttons"),
    (
        "My Xbox won't turn on",
        "unplug the power cable for 10 seconds and plug it into a wall outlet",
    ),
    ("My game downloads are very slow", "pause other downloads and use a wired connection"),
    ("A game disc isn't being recognized", "clean the disc with a soft cloth and insert it again"),
    ("My headset has no sound", "check the volume wheel and the audio settings"),
    ("I can't sign in to my account", "reset your password on the Microsoft account page"),
    ("The console is very loud", "give the console space to breathe and clean the vents"),
    ("My cloud saves are not syncing", "restart the console and check the Xbox status page"),
)
_DEVICES = ("Xbox Series X", "Xbox Series S", "Xbox One", "Xbox One X", "Xbox controller")
_OPENERS = ("Hi,", "Hello,", "Help!", "Hey there,", "Good morning,")
_CLOSERS = (
    "Does that fix it?",
    "Let me know if that works.",
    "Is there anything else I can help you with?",
)


def build_chat_examples(count: int, *, seed: int = 0) -> list[dict[str, object]]:
    """`count` synthetic Xbox-support chats in Foundry's format, the same for the same seed.

    Each is system + user + assistant (about 110 tokens with the tiny tokenizer);
    the answer follows from the problem named in the question, so a model can
    learn it and the held-out loss falls.
    """
    import random

    rng = random.Random(seed)
    examples: list[dict[str, object]] = []
    for i in range(count):
        problem, fix = _PROBLEMS[rng.randrange(len(_PROBLEMS))]
        device = _DEVICES[rng.randrange(len(_DEVICES))]
        opener = _OPENERS[rng.randrange(len(_OPENERS))]
        closer = _CLOSERS[rng.randrange(len(_CLOSERS))]
        question = f"{opener} {problem.lower()} on my {device}. (ticket {1000 + i})"
        answer = f"Sorry about that! For your {device}, please {fix}. {closer}"
        examples.append(
            {
                "messages": [
                    {"role": "system", "content": XBOX_SYSTEM},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return examples
