"""Parsing chat-completion requests: what is accepted, and the 400s for the rest."""

from __future__ import annotations

import json

import pytest

from kubetune.serve.engine import Completion, Message, SamplingParams
from kubetune.serve.protocol import (
    ApiError,
    build_completion,
    build_usage_chunk,
    parse_chat_request,
)

LIMIT = 512
USER = {"role": "user", "content": "hi"}


def parse(body: object, *, raw: bytes | None = None):
    return parse_chat_request(
        raw if raw is not None else json.dumps(body).encode(), max_tokens_limit=LIMIT
    )


def request(**fields):
    return {"model": "m", "messages": [USER], **fields}


def test_minimal_request_gets_openai_defaults():
    chat = parse(request())
    assert chat.model == "m"
    assert chat.messages == (Message("user", "hi"),)
    assert chat.params == SamplingParams(max_tokens=None, temperature=1.0, top_p=1.0)
    assert not chat.stream
    assert not chat.include_usage


def test_all_supported_fields():
    chat = parse(
        request(
            messages=[
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                    "name": "x",
                },
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "more"},
            ],
            temperature=0,
            top_p=0.5,
            max_completion_tokens=7,
            n=1,
            stream=True,
            stream_options={"include_usage": True},
            stop="END",
            seed=3,
            user="u",
            presence_penalty=0,
            frequency_penalty=0.0,
            logprobs=False,
        )
    )
    assert chat.messages[1] == Message("user", "a\nb")
    assert chat.params == SamplingParams(
        max_tokens=7, temperature=0.0, top_p=0.5, stop=("END",), seed=3
    )
    assert chat.stream
    assert chat.include_usage


@pytest.mark.parametrize(
    ("body", "raw", "param", "fragment"),
    [
        pytest.param(None, b"{not json", None, "could not parse the JSON", id="invalid-json"),
        pytest.param(None, b"\xff\xfe", None, "could not parse the JSON", id="not-utf8"),
        pytest.param([1, 2], None, None, "must be a JSON object", id="array-body"),
        pytest.param(
            {"model": "m"}, None, "messages", "Missing required parameter", id="no-messages"
        ),
        pytest.param(request(messages=[]), None, "messages", "at least 1", id="empty-messages"),
        pytest.param(
            request(messages=[{"role": "tool", "content": "x"}]),
            None,
            "messages[0].role",
            "'system', 'developer', 'user' or 'assistant'",
            id="bad-role",
        ),
        pytest.param(
            request(messages=[{"role": "user"}]),
            None,
            "messages[0].content",
            "Missing",
            id="no-content",
        ),
        pytest.param(
            request(messages=[{"role": "user", "content": 5}]),
            None,
            "messages[0].content",
            "valid string",
            id="content-number",
        ),
        pytest.param(
            request(
                messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]
            ),
            None,
            "messages[0].content",
            "only parts of type 'text'",
            id="image-part",
        ),
        pytest.param(
            request(messages=["hi"]), None, "messages[0]", "valid dictionary", id="message-string"
        ),
        pytest.param(
            request(temperature="hot"), None, "temperature", "valid number", id="temperature-string"
        ),
        pytest.param(
            request(temperature=True), None, "temperature", "valid number", id="temperature-bool"
        ),
        pytest.param(
            request(temperature=2.5), None, "temperature", "less than or equal to 2", id="too-hot"
        ),
        pytest.param(request(top_p=0), None, "top_p", "greater than 0", id="top-p-zero"),
        pytest.param(
            request(max_tokens=0),
            None,
            "max_tokens",
            "greater than or equal to 1",
            id="max-tokens-0",
        ),
        pytest.param(
            request(max_tokens="5"), None, "max_tokens", "valid integer", id="max-tokens-string"
        ),
        pytest.param(
            request(max_tokens=LIMIT + 1),
            None,
            "max_tokens",
            "more than this model",
            id="max-tokens-big",
        ),
        pytest.param(
            request(max_completion_tokens=LIMIT + 1),
            None,
            "max_completion_tokens",
            "more than this model",
            id="max-completion-tokens-big",
        ),
        pytest.param(
            request(max_tokens=1, max_completion_tokens=1),
            None,
            "max_tokens",
            "not both",
            id="both-limits",
        ),
        pytest.param(request(n=2), None, "n", "Only n=1", id="n-2"),
        pytest.param(request(stream="yes"), None, "stream", "valid boolean", id="stream-string"),
        pytest.param(
            request(stream_options={"include_usage": True}),
            None,
            "stream_options",
            "only allowed",
            id="options-without-stream",
        ),
        pytest.param(
            request(stop=["a", "b", "c", "d", "e"]), None, "stop", "at most 4", id="five-stops"
        ),
        pytest.param(request(stop=""), None, "stop", "must not be empty", id="empty-stop"),
        pytest.param(
            request(presence_penalty=1), None, "presence_penalty", "not supported", id="penalty"
        ),
        pytest.param(request(logprobs=True), None, "logprobs", "not supported", id="logprobs"),
        pytest.param(request(tools=[]), None, "tools", "Unrecognized request argument", id="tools"),
        pytest.param(request(model=""), None, "model", "at least 1 character", id="empty-model"),
        pytest.param(
            {"messages": [USER]}, None, "model", "Missing required parameter", id="no-model"
        ),
    ],
)
def test_bad_requests_are_400_with_the_param(body, raw, param, fragment):
    with pytest.raises(ApiError) as e:
        parse(body, raw=raw)
    assert e.value.status == 400
    assert e.value.param == param
    assert fragment in e.value.message
    error = e.value.body()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"


def test_many_problems_are_reported_together_with_the_first_as_param():
    with pytest.raises(ApiError) as e:
        parse({"messages": [{"role": "bot", "content": 1}], "temperature": "x"})
    assert e.value.param == "model"
    for fragment in ("'model'", "messages[0].role", "messages[0].content", "temperature"):
        assert fragment in e.value.message


def test_bodies_match_openai_shapes():
    done = Completion(text="hello", finish_reason="length", prompt_tokens=3, completion_tokens=2)
    body = build_completion(id="chatcmpl-1", created=5, model="m", completion=done)
    assert body["object"] == "chat.completion"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hello", "refusal": None},
            "logprobs": None,
            "finish_reason": "length",
        }
    ]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    last = build_usage_chunk(id="chatcmpl-1", created=5, model="m", completion=done)
    assert last["choices"] == []
    assert last["usage"] == body["usage"]
