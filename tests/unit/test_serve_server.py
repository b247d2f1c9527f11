"""The HTTP layer against a fake engine: routing, error bodies, streaming, and the
event loop staying free while a generation runs on the worker thread."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Callable, Sequence

from aiohttp.test_utils import TestClient, TestServer

from kubetune.serve.engine import Completion, Message, Prompt, PromptError, SamplingParams
from kubetune.serve.server import MAX_BODY_BYTES, ServedModels, build_app

CHAT = "/v1/chat/completions"
TUNED = {"model": "tuned", "messages": [{"role": "user", "content": "hi"}]}


class FakeEngine:
    """Answers with fixed pieces; can be told to block, fail, or refuse the prompt."""

    context_length = 64

    def __init__(self, pieces: Sequence[str] = ("Hel", "lo", "!")) -> None:
        self.pieces = pieces
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()
        self.fail_after: int | None = None
        self.prompt_error: PromptError | None = None
        self.seen: list[Prompt] = []
        self.threads: set[str] = set()
        self.endless = False  # stream "x" until cancelled
        self.stopped = threading.Event()  # set when an endless generation was cancelled

    def prepare(
        self, messages: Sequence[Message], *, use_adapter: bool, params: SamplingParams
    ) -> Prompt:
        if self.prompt_error is not None:
            raise self.prompt_error
        return Prompt(
            token_ids=tuple(range(len(messages))),
            use_adapter=use_adapter,
            params=params,
            max_new_tokens=params.max_tokens or 8,
        )

    def generate(
        self,
        prompt: Prompt,
        *,
        on_text: Callable[[str], None] | None = None,
        cancelled: threading.Event | None = None,
    ) -> Completion:
        self.threads.add(threading.current_thread().name)
        self.seen.append(prompt)
        self.started.set()
        assert self.release.wait(10)
        if self.endless:
            assert cancelled is not None
            for _ in range(10_000):
                if cancelled.wait(0.001):
                    self.stopped.set()
                    break
                assert on_text is not None
                on_text("x")
        for i, piece in enumerate(self.pieces):
            if self.fail_after == i:
                raise RuntimeError("boom /secret/path")
            if on_text is not None:
                on_text(piece)
        return Completion(
            text="".join(self.pieces),
            finish_reason="stop",
            prompt_tokens=len(prompt.token_ids),
            completion_tokens=len(self.pieces),
        )


def run(engine: FakeEngine, scenario: Callable[[TestClient], object]) -> None:
    async def main() -> None:
        app = build_app(engine, ServedModels({"tuned": True, "base": False}, created=7))
        async with TestClient(TestServer(app)) as client:
            await scenario(client)

    asyncio.run(main())


def sse_events(text: str) -> list[object]:
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), events
    return [e.removeprefix("data: ") if e == "data: [DONE]" else json.loads(e[6:]) for e in events]


async def expect_error(response, status: int, param: str | None = None, code=None) -> dict:
    assert response.status == status
    assert response.content_type == "application/json"
    error = (await response.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert error["code"] == code
    return error


def test_completion_routes_model_names_to_adapter_on_or_off():
    engine = FakeEngine()

    async def scenario(client):
        r = await client.post(CHAT, json=TUNED)
        assert r.status == 200
        body = await r.json()
        assert body["model"] == "tuned"
        assert body["choices"][0]["message"]["content"] == "Hello!"
        assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
        r = await client.post(CHAT, json={**TUNED, "model": "base"})
        assert (await r.json())["model"] == "base"

    run(engine, scenario)
    assert [p.use_adapter for p in engine.seen] == [True, False]
    assert len(engine.threads) == 1
    assert engine.threads.pop().startswith("generate")


def test_healthz_answers_while_a_generation_is_running():
    engine = FakeEngine()
    engine.release.clear()

    async def scenario(client):
        pending = asyncio.create_task(client.post(CHAT, json=TUNED))
        assert await asyncio.to_thread(engine.started.wait, 10)
        r = await asyncio.wait_for(client.get("/healthz"), timeout=5)
        assert r.status == 200
        assert await r.json() == {"status": "ok"}
        r = await asyncio.wait_for(client.get("/v1/models"), timeout=5)
        assert r.status == 200
        assert not pending.done()
        engine.release.set()
        assert (await pending).status == 200

    run(engine, scenario)


def test_models_list_and_retrieve():
    async def scenario(client):
        r = await client.get("/v1/models")
        assert await r.json() == {
            "object": "list",
            "data": [
                {"id": "tuned", "object": "model", "created": 7, "owned_by": "kubetune"},
                {"id": "base", "object": "model", "created": 7, "owned_by": "kubetune"},
            ],
        }
        r = await client.get("/v1/models/tuned")
        assert (await r.json())["id"] == "tuned"
        await expect_error(await client.get("/v1/models/nope"), 404, "model", "model_not_found")

    run(FakeEngine(), scenario)


def test_stream_sends_role_content_finish_usage_and_done():
    async def scenario(client):
        r = await client.post(
            CHAT, json={**TUNED, "stream": True, "stream_options": {"include_usage": True}}
        )
        assert r.status == 200
        assert r.content_type == "text/event-stream"
        events = sse_events(await r.text())
        assert events[-1] == "[DONE]"
        chunks = events[:-1]
        assert {c["id"] for c in chunks} == {chunks[0]["id"]}
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
        assert text == "Hello!"
        assert chunks[-2]["choices"][0] == {
            "index": 0,
            "delta": {},
            "logprobs": None,
            "finish_reason": "stop",
        }
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["total_tokens"] == 4

    run(FakeEngine(), scenario)


def test_client_errors_are_openai_error_bodies():
    engine = FakeEngine()

    async def scenario(client):
        await expect_error(await client.post(CHAT, data=b"{oops"), 400)
        await expect_error(
            await client.post(CHAT, json={**TUNED, "model": "gpt-4"}),
            404,
            "model",
            "model_not_found",
        )
        await expect_error(
            await client.post(CHAT, json={**TUNED, "max_tokens": 65}), 400, "max_tokens"
        )
        await expect_error(await client.post(CHAT, json={**TUNED, "n": 3}), 400, "n")
        await expect_error(await client.get(CHAT), 405)
        await expect_error(await client.get("/v1/completions"), 404)
        big = b'{"x": "' + b"a" * MAX_BODY_BYTES + b'"}'
        await expect_error(await client.post(CHAT, data=io.BytesIO(big)), 413)
        engine.prompt_error = PromptError("too long", code="context_length_exceeded")
        await expect_error(
            await client.post(CHAT, json=TUNED), 400, "messages", "context_length_exceeded"
        )
        r = await client.post(CHAT, json={**TUNED, "stream": True})
        await expect_error(r, 400, "messages", "context_length_exceeded")

    run(engine, scenario)
    assert engine.seen == []


def test_engine_failure_is_a_500_body_without_the_traceback(caplog):
    engine = FakeEngine()
    engine.fail_after = 0

    async def scenario(client):
        error = await expect_error(await client.post(CHAT, json=TUNED), 500)
        assert error["type"] == "server_error"
        assert "secret" not in error["message"]
        assert "Traceback" not in error["message"]

    run(engine, scenario)
    assert "boom" in caplog.text  # logged on the server side


def test_failure_mid_stream_ends_the_stream_with_an_error_event(caplog):
    engine = FakeEngine()
    engine.fail_after = 2

    async def scenario(client):
        r = await client.post(CHAT, json={**TUNED, "stream": True})
        assert r.status == 200
        events = sse_events(await r.text())
        assert events[-1] == "[DONE]"
        assert events[-2]["error"]["type"] == "server_error"
        assert "secret" not in events[-2]["error"]["message"]
        assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2]) == "Hello"

    run(engine, scenario)
    assert "generation failed" in caplog.text


def test_a_client_that_goes_away_stops_the_generation():
    engine = FakeEngine()
    engine.endless = True

    async def scenario(client):
        r = await client.post(CHAT, json={**TUNED, "stream": True})
        await r.content.readline()  # the stream has started
        r.close()
        assert await asyncio.to_thread(engine.stopped.wait, 10)

    run(engine, scenario)
