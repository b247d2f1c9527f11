"""The aiohttp application: `/v1/chat/completions`, `/v1/models`, `/healthz`.

Generation blocks, so it runs on a single worker thread: the event loop keeps answering
probes and streaming while a completion is computed, and requests queue for the model in
arrival order (one model, one generation at a time: on a CPU, torch already uses every
core for one; it also makes switching the adapter off for base-model requests safe).
Streamed text crosses from the worker to the loop through an `asyncio.Queue`.

Every failure becomes an OpenAI error body: `ApiError` for what the client got wrong,
aiohttp's own HTTP errors (404, 405, 413) rewritten to that shape, and anything
unexpected logged here and answered as a 500 without a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web

from kubetune.serve.engine import Completion, Engine, Prompt, PromptError
from kubetune.serve.protocol import (
    SSE_DONE,
    ApiError,
    ChatRequest,
    FinishReason,
    build_chunk,
    build_completion,
    build_model,
    build_model_list,
    build_usage_chunk,
    parse_chat_request,
    sse_event,
)

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024

_T = TypeVar("_T")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ServedModels:
    """The model ids clients may ask for, each with whether the adapter is applied."""

    adapter_by_id: Mapping[str, bool]
    created: int

    def use_adapter(self, model: str) -> bool:
        try:
            return self.adapter_by_id[model]
        except KeyError:
            raise ApiError(
                404,
                f"The model '{model}' does not exist. Served: {', '.join(self.adapter_by_id)}.",
                param="model",
                code="model_not_found",
            ) from None


@dataclass
class _State:
    engine: Engine
    models: ServedModels
    executor: ThreadPoolExecutor

    async def call(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def prepare(self, chat: ChatRequest, use_adapter: bool) -> Prompt:
        fn = functools.partial(
            self.engine.prepare, chat.messages, use_adapter=use_adapter, params=chat.params
        )
        try:
            return await self.call(fn)
        except PromptError as e:
            raise ApiError(400, str(e), param="messages", code=e.code) from None


STATE = web.AppKey("state", _State)


def _error_response(error: ApiError) -> web.Response:
    return web.json_response(error.body(), status=error.status)


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return _error_response(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        message = f"{e.reason} ({request.method} {request.path})"
        if e.status == 413:
            message = f"The request body is larger than {MAX_BODY_BYTES} bytes."
        return _error_response(ApiError(e.status, message))
    except Exception:
        # The HTTP boundary: whatever went wrong is logged here with its traceback and
        # the client gets the OpenAI shape, never aiohttp's plain-text 500.
        logger.exception("request failed method=%s path=%s", request.method, request.path)
        return _error_response(
            ApiError(500, "The server had an error processing your request.", type="server_error")
        )


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def list_models(request: web.Request) -> web.Response:
    models = request.app[STATE].models
    return web.json_response(build_model_list(list(models.adapter_by_id), created=models.created))


async def get_model(request: web.Request) -> web.Response:
    models = request.app[STATE].models
    model_id = request.match_info["model"]
    models.use_adapter(model_id)  # 404 when unknown
    return web.json_response(build_model(model_id, created=models.created))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    chat = parse_chat_request(await request.read(), max_tokens_limit=state.engine.context_length)
    prompt = await state.prepare(chat, state.models.use_adapter(chat.model))
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    started = time.monotonic()
    if chat.stream:
        response, completion = await _stream(request, state, chat, prompt, completion_id, created)
    else:
        cancelled = threading.Event()
        try:
            completion = await state.call(
                functools.partial(state.engine.generate, prompt, cancelled=cancelled)
            )
        finally:
            cancelled.set()  # the client went away before the end: stop generating
        body = build_completion(
            id=completion_id, created=created, model=chat.model, completion=completion
        )
        response = web.json_response(body)
    if completion is not None:
        logger.info(
            "completion model=%s stream=%s prompt_tokens=%d completion_tokens=%d "
            "finish_reason=%s seconds=%.2f",
            chat.model,
            chat.stream,
            completion.prompt_tokens,
            completion.completion_tokens,
            completion.finish_reason,
            time.monotonic() - started,
        )
    return response


async def _stream(
    request: web.Request,
    state: _State,
    chat: ChatRequest,
    prompt: Prompt,
    completion_id: str,
    created: int,
) -> tuple[web.StreamResponse, Completion | None]:
    """Send the completion as server-sent events, as OpenAI does: a role chunk, content
    chunks, a chunk with the finish reason, maybe a usage chunk, then `[DONE]`."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    cancelled = threading.Event()

    def on_text(piece: str) -> None:  # on the worker thread
        loop.call_soon_threadsafe(pieces.put_nowait, piece)

    def chunk(delta: dict[str, str], finish_reason: FinishReason | None = None) -> bytes:
        return sse_event(
            build_chunk(
                id=completion_id,
                created=created,
                model=chat.model,
                delta=delta,
                finish_reason=finish_reason,
            )
        )

    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # no proxy buffering between us and the client
        }
    )
    await response.prepare(request)
    generation = loop.run_in_executor(
        state.executor,
        functools.partial(state.engine.generate, prompt, on_text=on_text, cancelled=cancelled),
    )
    # Runs on the loop after every `on_text` callback the worker scheduled before it ended.
    generation.add_done_callback(lambda _: pieces.put_nowait(None))
    completion: Completion | None = None
    try:
        await response.write(chunk({"role": "assistant", "content": ""}))
        finished = False
        while not finished and (piece := await pieces.get()) is not None:
            # A slow client gets what piled up in one chunk rather than many small ones.
            while not pieces.empty():
                more = pieces.get_nowait()
                if more is None:
                    finished = True
                    break
                piece += more
            if piece:
                await response.write(chunk({"content": piece}))
        try:
            completion = await generation
        except Exception as e:
            # Headers are sent, so the error goes into the stream, where the openai
            # client raises it (it checks every event for an "error" key).
            logger.exception("generation failed model=%s", chat.model)
            error = ApiError(500, f"Generation failed: {type(e).__name__}", type="server_error")
            await response.write(sse_event(error.body()))
        else:
            await response.write(chunk({}, completion.finish_reason))
            if chat.include_usage:
                await response.write(
                    sse_event(
                        build_usage_chunk(
                            id=completion_id,
                            created=created,
                            model=chat.model,
                            completion=completion,
                        )
                    )
                )
        await response.write(SSE_DONE)
        await response.write_eof()
    except ConnectionResetError:
        logger.info("client disconnected model=%s id=%s", chat.model, completion_id)
        completion = None
    finally:
        cancelled.set()  # a client that disconnected stops the generation
    return response, completion


def build_app(engine: Engine, models: ServedModels) -> web.Application:
    """The application; its worker thread is shut down on cleanup."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[openai_errors])
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
    app[STATE] = _State(engine=engine, models=models, executor=executor)

    async def shutdown(_: web.Application) -> None:
        executor.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(shutdown)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
    app.router.add_post("/v1/chat/completions", chat_completions)
    return app
