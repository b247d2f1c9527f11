"""The `Engine` behind `python -m kubetune.serve`: transformers + peft, one request at
a time.

Loading: the base model from a local directory or a Hugging Face id already in the
local cache (nothing is downloaded unless `allow_download`), the LoRA adapter with
peft on top, optionally merged into the weights (faster, but then the base model
alone can no longer be served). The tokenizer comes from the adapter directory when
the trainer saved one there (it is the one the adapter was trained with), else from
the base model; its chat template is required.

Generation uses `model.generate`. One stopping criterion, called after every new
token, also does the streaming: it turns the token into text (`textstream`), cuts at
stop strings, hands the text to the server and stops when the client has gone. This is
not a batching engine: for throughput on GPUs the operator deploys vLLM instead.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from jinja2 import TemplateError
from peft import PeftModel
from transformers import (
    GenerationConfig,
    GenerationMixin,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from kubetune.serve.engine import Completion, Message, Prompt, PromptError, SamplingParams
from kubetune.serve.textstream import Detokenizer, StopScanner

logger = logging.getLogger(__name__)

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
DTYPES = ("auto", "float32", "bfloat16", "float16")
UNKNOWN_LENGTH = 1_000_000  # tokenizers say "1e30" when they do not know a limit


class LoadError(Exception):
    """The model, adapter or tokenizer cannot be loaded; the message says why."""


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: Dtype, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            dtype
        ]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # CPU matmuls in bf16 are slow without AMX, and less exact


def cgroup_cpu_limit(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """The container's CPU limit (cgroup v2), rounded up; None when unlimited/unknown.

    torch sizes its thread pool by the node's cores, not the pod's limit; more threads
    than the quota get throttled and run slower than fewer."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


class _Step(StoppingCriteria):
    """Called by `generate` after each token: detokenize, stream, and say when to stop."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_length: int,
        stops: Sequence[str],
        on_text: Callable[[str], None] | None,
        cancelled: threading.Event | None,
    ) -> None:
        def decode(ids: Sequence[int]) -> str:
            text = tokenizer.decode(list(ids), skip_special_tokens=True)
            assert isinstance(text, str)  # one sequence in, one string out
            return text

        self._detokenizer = Detokenizer(decode)
        self._scanner = StopScanner(stops)
        self._on_text = on_text
        self._cancelled = cancelled
        self._seen = prompt_length
        self.pieces: list[str] = []

    @property
    def stopped(self) -> bool:
        return self._scanner.stopped

    def emit(self, piece: str) -> None:
        if piece:
            self.pieces.append(piece)
            if self._on_text is not None:
                self._on_text(piece)

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        for token in input_ids[0, self._seen :].tolist():
            self.emit(self._scanner.feed(self._detokenizer.push(token)))
        self._seen = input_ids.shape[1]
        stop = self._scanner.stopped or (self._cancelled is not None and self._cancelled.is_set())
        # One flag per sequence; torch types the result as a plain Tensor.
        done = torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)
        return done  # type: ignore[return-value]

    def finish(self) -> None:
        self.emit(self._scanner.feed(self._detokenizer.flush()))
        self.emit(self._scanner.flush())


class TransformersEngine:
    def __init__(
        self,
        model: PreTrainedModel | PeftModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        context_length: int,
        default_max_tokens: int,
    ) -> None:
        self._model = model
        # peft injects the LoRA layers into the base model itself, so generating with
        # it applies the adapter (unless switched off with `disable_adapter`).
        base = model.get_base_model() if isinstance(model, PeftModel) else model
        if not isinstance(base, GenerationMixin):
            raise LoadError(f"{type(base).__name__} cannot generate text")
        self._generate = base.generate
        self._device = model.device
        self._tokenizer = tokenizer
        self._context_length = context_length
        self._default_max_tokens = default_max_tokens
        self._eos_ids = _eos_token_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self._pad_id = pad if isinstance(pad, int) else self._eos_ids[0]

    @property
    def context_length(self) -> int:
        return self._context_length

    def prepare(
        self, messages: Sequence[Message], *, use_adapter: bool, params: SamplingParams
    ) -> Prompt:
        conversation = [
            # OpenAI's newer "developer" role is what chat templates call "system".
            {"role": "system" if m.role == "developer" else m.role, "content": m.content}
            for m in messages
        ]
        try:
            text = self._tokenizer.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=False
            )
        except TemplateError as e:
            raise PromptError(f"The model's chat template rejected the messages: {e}") from None
        assert isinstance(text, str)
        # The template already wrote any BOS it wants.
        ids: list[int] = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        room = self._context_length - len(ids)
        wanted = params.max_tokens
        if room < 1 or (wanted is not None and wanted > room):
            raise PromptError(
                f"This model's maximum context length is {self._context_length} tokens. "
                f"However, you requested {len(ids) + (wanted or 1)} tokens ({len(ids)} in the "
                f"messages, {wanted or 1} in the completion). Please reduce the length of the "
                "messages or completion.",
                code="context_length_exceeded",
            )
        max_new = wanted if wanted is not None else min(room, self._default_max_tokens)
        return Prompt(
            token_ids=tuple(ids), use_adapter=use_adapter, params=params, max_new_tokens=max_new
        )

    def generate(
        self,
        prompt: Prompt,
        *,
        on_text: Callable[[str], None] | None = None,
        cancelled: threading.Event | None = None,
    ) -> Completion:
        params = prompt.params
        sample = params.temperature > 0
        config = GenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=prompt.max_new_tokens,
            do_sample=sample,
            temperature=params.temperature if sample else None,
            top_p=params.top_p if sample else None,
            top_k=None,
            eos_token_id=self._eos_ids,
            pad_token_id=self._pad_id,
        )
        step = _Step(self._tokenizer, len(prompt.token_ids), params.stop, on_text, cancelled)
        input_ids = torch.tensor([prompt.token_ids], dtype=torch.long, device=self._device)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.inference_mode(), self._adapter(prompt.use_adapter):
            output = self._generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([step]),
            )
        generated: list[int] = output[0, len(prompt.token_ids) :].tolist()
        step.finish()
        hit_eos = bool(generated) and generated[-1] in self._eos_ids
        ran_out = len(generated) >= prompt.max_new_tokens and not (hit_eos or step.stopped)
        return Completion(
            text="".join(step.pieces),
            finish_reason="length" if ran_out else "stop",
            prompt_tokens=len(prompt.token_ids),
            completion_tokens=len(generated),
        )

    def _adapter(self, use_adapter: bool) -> contextlib.AbstractContextManager[object]:
        """Switches the adapter off for base-model requests."""
        if isinstance(self._model, PeftModel) and not use_adapter:
            return self._model.disable_adapter()
        return contextlib.nullcontext()


def _eos_token_ids(
    model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase
) -> list[int]:
    """Every id that ends a turn: the generation config's (Phi-3 lists several) and the
    tokenizer's."""
    configured = model.generation_config.eos_token_id if model.generation_config else None
    ids = [*configured] if isinstance(configured, list) else [configured]
    ids.append(tokenizer.eos_token_id)
    unique = list(dict.fromkeys(i for i in ids if isinstance(i, int)))
    if not unique:
        raise LoadError("Neither the model nor the tokenizer defines an end-of-sequence token")
    return unique
