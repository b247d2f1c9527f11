"""What the HTTP layer needs from a model: plain data types and the `Engine` Protocol.

No torch here, so the server and its tests can run against a fake engine. An engine is
used from one worker thread at a time (the server guarantees it): its methods block
and need not be thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol


class Message(NamedTuple):
    role: str
    content: str


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None  # None: whatever fits, up to the server's default
    temperature: float = 1.0  # 0 means greedy decoding
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Prompt:
    """A templated, tokenized prompt that fits the context, ready to generate from."""

    token_ids: tuple[int, ...]
    use_adapter: bool
    params: SamplingParams
    max_new_tokens: int


class PromptError(ValueError):
    """The messages cannot be turned into a prompt (template refused them, too long)."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class Engine(Protocol):
    @property
    def context_length(self) -> int:
        """Prompt plus completion tokens the model accepts."""
        ...

    def prepare(
        self, messages: Sequence[Message], *, use_adapter: bool, params: SamplingParams
    ) -> Prompt:
        """Apply the chat template and check lengths; raises `PromptError`."""
        ...

    def generate(
        self,
        prompt: Prompt,
        *,
        on_text: Callable[[str], None] | None = None,
        cancelled: threading.Event | None = None,
    ) -> Completion:
        """Generate a completion, calling `on_text` with each new piece of text; stops
        early (finish reason "stop") once `cancelled` is set."""
        ...
