"""The OpenAI chat-completions wire format: request parsing, response bodies, errors.

Pure functions and pydantic models only; no HTTP and no torch. Requests are parsed
strictly (no string-to-number coercion) so a wrong type is a 400, as at OpenAI, and
every problem becomes an `ApiError` carrying OpenAI's error shape
`{"error": {"message", "type", "param", "code"}}`.

What is accepted: `model`, `messages` (roles system/developer/user/assistant, content
a string or a list of text parts), `temperature`, `top_p`, `max_tokens` /
`max_completion_tokens`, `stream`, `stream_options.include_usage`, `n` (1 only),
`stop`, `seed`, `user`, and the neutral values of `presence_penalty`,
`frequency_penalty` and `logprobs`. Anything else (tools, images, response formats) is
rejected by name rather than silently ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from kubetune.serve.engine import Completion, Message, SamplingParams

MAX_STOP_SEQUENCES = 4
MAX_ERRORS_REPORTED = 5

FinishReason = Literal["stop", "length"]


class ApiError(Exception):
    """An error answered to the client as an OpenAI error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _text_content(value: object) -> object:
    """A list of `{"type": "text", "text": ...}` parts becomes one string."""
    if not isinstance(value, list):
        return value  # a string passes; anything else fails the strict `str` check
    texts: list[str] = []
    for i, part in enumerate(value):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise ValueError(f"part {i}: only parts of type 'text' are supported")
        text = part.get("text")
        if not isinstance(text, str) or set(part) != {"type", "text"}:
            raise ValueError(f"part {i}: a text part is {{'type': 'text', 'text': <string>}}")
        texts.append(text)
    return "\n".join(texts)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, BeforeValidator(_text_content)]
    name: str | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    # Accepted only at their neutral values, which many clients send explicitly.
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None


@dataclass(frozen=True)
class ChatRequest:
    """A parsed, checked request: what the server hands to the engine."""

    model: str
    messages: tuple[Message, ...]
    params: SamplingParams
    stream: bool
    include_usage: bool


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _describe(error: ErrorDetails) -> tuple[str, str]:
    param = _param(error["loc"])
    if error["type"] == "extra_forbidden":
        return param, f"Unrecognized request argument supplied: {param}"
    if error["type"] == "missing":
        return param, f"Missing required parameter: '{param}'."
    msg = error["msg"].removeprefix("Value error, ")
    return param, f"Invalid '{param}': {msg}."


def _validation_error(exc: ValidationError) -> ApiError:
    described = [_describe(e) for e in exc.errors(include_url=False, include_input=False)]
    messages = [m for _, m in described[:MAX_ERRORS_REPORTED]]
    if len(described) > MAX_ERRORS_REPORTED:
        messages.append(f"({len(described) - MAX_ERRORS_REPORTED} more problems)")
    return ApiError(400, " ".join(messages), param=described[0][0])


def _check_neutral(req: ChatCompletionRequest) -> None:
    if req.n not in (None, 1):
        raise ApiError(400, "Only n=1 is supported: one choice per request.", param="n")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name) not in (None, 0):
            raise ApiError(400, f"'{name}' is not supported; leave it unset or 0.", param=name)
    if req.logprobs:
        raise ApiError(400, "'logprobs' is not supported.", param="logprobs")
    if req.stream_options is not None and not req.stream:
        raise ApiError(
            400, "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
        )


def _stop_sequences(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else (stop or [])
    if len(stops) > MAX_STOP_SEQUENCES:
        raise ApiError(400, f"'stop' takes at most {MAX_STOP_SEQUENCES} sequences.", param="stop")
    if any(not s for s in stops):
        raise ApiError(400, "'stop' sequences must not be empty.", param="stop")
    return tuple(stops)


def parse_chat_request(body: bytes, *, max_tokens_limit: int) -> ChatRequest:
    """Parse and check a chat-completions body, or raise `ApiError` (400)."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. The API expects a JSON "
            "payload with Content-Type: application/json.",
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    try:
        req = ChatCompletionRequest.model_validate(data)
    except ValidationError as e:
        raise _validation_error(e) from None
    _check_neutral(req)
    if req.max_tokens is not None and req.max_completion_tokens is not None:
        raise ApiError(
            400,
            "Give either 'max_tokens' or 'max_completion_tokens', not both.",
            param="max_tokens",
        )
    max_tokens = req.max_tokens if req.max_tokens is not None else req.max_completion_tokens
    if max_tokens is not None and max_tokens > max_tokens_limit:
        name = "max_tokens" if req.max_tokens is not None else "max_completion_tokens"
        raise ApiError(
            400,
            f"Invalid '{name}': {max_tokens} is more than this model supports "
            f"({max_tokens_limit}).",
            param=name,
        )
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        stop=_stop_sequences(req.stop),
        seed=req.seed,
    )
    return ChatRequest(
        model=req.model,
        messages=tuple(Message(m.role, m.content) for m in req.messages),
        params=params,
        stream=bool(req.stream),
        include_usage=req.stream_options is not None and req.stream_options.include_usage,
    )


def usage(completion: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


def _envelope(kind: str, id: str, created: int, model: str) -> dict[str, object]:
    """The fields every completion body and stream chunk starts with."""
    return {
        "id": id,
        "object": kind,
        "created": created,
        "model": model,
        "system_fingerprint": None,
    }


def build_completion(
    *, id: str, created: int, model: str, completion: Completion
) -> dict[str, object]:
    """The body of a non-streamed `chat.completion`."""
    return {
        **_envelope("chat.completion", id, created, model),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text, "refusal": None},
                "logprobs": None,
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": usage(completion),
    }


def build_chunk(
    *,
    id: str,
    created: int,
    model: str,
    delta: dict[str, str],
    finish_reason: FinishReason | None = None,
) -> dict[str, object]:
    """One `chat.completion.chunk` of a stream."""
    return {
        **_envelope("chat.completion.chunk", id, created, model),
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def build_usage_chunk(
    *, id: str, created: int, model: str, completion: Completion
) -> dict[str, object]:
    """The last chunk when `stream_options.include_usage` is set: no choices, usage."""
    return {
        **_envelope("chat.completion.chunk", id, created, model),
        "choices": [],
        "usage": usage(completion),
    }


def build_model(model_id: str, *, created: int) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "kubetune"}


def build_model_list(model_ids: list[str], *, created: int) -> dict[str, object]:
    return {"object": "list", "data": [build_model(m, created=created) for m in model_ids]}


def sse_event(data: dict[str, object]) -> bytes:
    """One server-sent event as OpenAI streams them (`data: <json>` and a blank line)."""
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
