"""`python -m kubetune.serve` as a real process, driven by the official `openai` client.

The model is the tiny random Phi-3 from `kubetune.trainer.tinymodel`; the adapter is
a random LoRA made here with peft (B non-zero, so it changes the outputs), saved with
the tokenizer next to it as the trainer does. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("peft")

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADAPTER_NAME = "xbox-support"
BASE_NAME = "tiny-phi3"
QUESTION = [
    {"role": "system", "content": "You are an Xbox customer support agent."},
    {"role": "user", "content": "My controller keeps disconnecting."},
]


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    client: openai.OpenAI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def post_raw(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "kubetune.serve", *args]


def server_env(tmp: Path) -> dict[str, str]:
    # As in the pod: HOME is a scratch directory, and nothing may be fetched.
    return {**os.environ, "HOME": str(tmp), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf")}


def start_server(tmp: Path, *args: str) -> Server:
    port = free_port()
    log = tmp / f"serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            serve_command(*args, "--host=127.0.0.1", f"--port={port}", "--threads=1"),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=server_env(tmp),
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited {process.returncode}:\n{log.read_text()}")
        try:
            if get(f"{url}/healthz")[0] == 200:
                client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
                return Server(url, process, log, client)
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"server not up after 120 s:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    server.client.close()
    server.process.terminate()  # SIGTERM, as the kubelet sends
    assert server.process.wait(timeout=30) == 0, server.log.read_text()
    assert "Traceback" not in server.log.read_text()


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kubetune.trainer.tinymodel import build_tiny_model

    root = tmp_path_factory.mktemp("serve-models")
    base = build_tiny_model(root / "tiny-phi3", seed=0)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(
        r=8,
        lora_alpha=32,
        target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
        init_lora_weights=False,  # random A and B: a LoRA that changes the outputs
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(1)
        # peft 0.21 calls a property transformers 5 deprecates.
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        peft_model = get_peft_model(model, config)
    adapter = root / "adapter"
    peft_model.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(base).save_pretrained(adapter)
    return base, adapter


@pytest.fixture(scope="module")
def server(model_dirs, tmp_path_factory) -> Iterator[Server]:
    base, adapter = model_dirs
    srv = start_server(
        tmp_path_factory.mktemp("serve"),
        f"--base-model={base}",
        f"--adapter={adapter}",
        f"--model-name={ADAPTER_NAME}",
        f"--base-model-name={BASE_NAME}",
    )
    yield srv
    stop_server(srv)


def greedy(srv: Server, model: str, max_tokens: int = 24):
    return srv.client.chat.completions.create(
        model=model, messages=QUESTION, temperature=0, max_tokens=max_tokens
    )


def test_models_lists_the_adapter_and_the_base(server):
    ids = [m.id for m in server.client.models.list()]
    assert ids == [ADAPTER_NAME, BASE_NAME]
    assert server.client.models.retrieve(ADAPTER_NAME).owned_by == "kubetune"


def test_chat_completion_answers_with_model_name_and_usage(server, model_dirs):
    from transformers import AutoTokenizer

    done = greedy(server, ADAPTER_NAME, max_tokens=12)
    assert done.object == "chat.completion"
    assert done.id.startswith("chatcmpl-")
    assert done.model == ADAPTER_NAME
    choice = done.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    # The prompt is the chat template's rendering of the messages.
    tokenizer = AutoTokenizer.from_pretrained(model_dirs[1])
    text = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert done.usage.prompt_tokens == len(tokenizer(text, add_special_tokens=False).input_ids)
    assert 1 <= done.usage.completion_tokens <= 12
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    if choice.finish_reason == "length":
        assert done.usage.completion_tokens == 12


def test_streaming_yields_chunks_that_add_up_and_end(server):
    stream = server.client.chat.completions.create(
        model=ADAPTER_NAME,
        messages=QUESTION,
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len(chunks) >= 4
    assert all(c.object == "chat.completion.chunk" and c.model == ADAPTER_NAME for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] in ("stop", "length")
    assert all(f is None for f in finish[:-1])
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens >= 1
    # Greedy decoding streamed or not: the same text.
    assert streamed == greedy(server, ADAPTER_NAME).choices[0].message.content


def test_adapter_changes_the_output_at_temperature_zero(server):
    tuned = greedy(server, ADAPTER_NAME).choices[0].message.content
    base = greedy(server, BASE_NAME).choices[0].message.content
    assert tuned != base
    assert greedy(server, ADAPTER_NAME).choices[0].message.content == tuned  # deterministic


def test_stop_sequence_cuts_the_answer_streamed_or_not(server):
    full = greedy(server, ADAPTER_NAME).choices[0].message.content
    assert len(full) > 12
    stop = full[8:12]
    cut = full[: full.find(stop)]
    done = server.client.chat.completions.create(
        model=ADAPTER_NAME, messages=QUESTION, temperature=0, max_tokens=24, stop=[stop]
    )
    assert done.choices[0].message.content == cut
    assert done.choices[0].finish_reason == "stop"
    stream = server.client.chat.completions.create(
        model=ADAPTER_NAME, messages=QUESTION, temperature=0, max_tokens=24, stop=stop, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == cut
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_sampling_with_a_seed_repeats(server):
    def sample(seed: int) -> str:
        done = server.client.chat.completions.create(
            model=ADAPTER_NAME,
            messages=QUESTION,
            temperature=1.0,
            top_p=0.9,
            max_tokens=16,
            seed=seed,
        )
        return done.choices[0].message.content

    assert sample(7) == sample(7)


def test_base_output_matches_plain_transformers(server, model_dirs):
    """The server's base model is the untouched base: same greedy tokens as generate()."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, _ = model_dirs
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    text = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=24, do_sample=False)
    expected = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert greedy(server, BASE_NAME).choices[0].message.content == expected


@pytest.mark.parametrize(
    ("template", "content", "match", "code"),
    [
        pytest.param(
            "{{ raise_exception('Conversation roles must alternate') }}",
            "hi",
            "rejected the messages: Conversation roles must alternate",
            None,
            id="template-refuses",
        ),
        pytest.param(
            "{% for m in messages %}{{ m['content'] }}{% endfor %}",
            "Xbox " * 600,
            "maximum context length is 512",
            "context_length_exceeded",
            id="prompt-too-long",
        ),
    ],
)
def test_prompts_the_engine_cannot_take(model_dirs, tmp_path, template, content, match, code):
    """In-process: the engine's `PromptError`s, which the server answers with a 400."""
    from transformers import AutoTokenizer

    from kubetune.serve.engine import Message, PromptError, SamplingParams
    from kubetune.serve.loading import load_engine

    base, adapter = model_dirs
    # The adapter's own tokenizer (saved by the trainer) is the one the server uses.
    variant = tmp_path / "adapter"
    shutil.copytree(adapter, variant)
    tokenizer = AutoTokenizer.from_pretrained(variant)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(variant)
    engine = load_engine(str(base), variant, device="cpu")
    with pytest.raises(PromptError, match=match) as e:
        engine.prepare(
            [Message("user", content)], use_adapter=True, params=SamplingParams(max_tokens=4)
        )
    assert e.value.code == code


@pytest.mark.parametrize(
    ("kwargs", "status", "param"),
    [
        pytest.param({"model": "gpt-4o"}, 404, "model", id="unknown-model"),
        pytest.param(
            {"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]},
            400,
            "messages[0].role",
            id="bad-role",
        ),
        pytest.param({"messages": []}, 400, "messages", id="no-messages"),
        pytest.param({"n": 2}, 400, "n", id="n-2"),
        pytest.param({"max_tokens": 0}, 400, "max_tokens", id="max-tokens-0"),
        pytest.param({"max_tokens": 10**6}, 400, "max_tokens", id="max-tokens-huge"),
        pytest.param({"temperature": 5}, 400, "temperature", id="temperature-5"),
        pytest.param({"max_tokens": 500}, 400, "messages", id="prompt-plus-completion-too-long"),
    ],
)
def test_openai_client_gets_clean_errors(server, kwargs, status, param):
    request = {"model": ADAPTER_NAME, "messages": QUESTION, **kwargs}
    with pytest.raises(openai.APIStatusError) as e:
        server.client.chat.completions.create(**request)
    assert e.value.status_code == status
    assert e.value.body["param"] == param
    assert e.value.body["type"] == "invalid_request_error"
    assert e.value.body["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param(b'{"model": "x", "messages": [', None, id="invalid-json"),
        pytest.param(b'"just a string"', None, id="not-an-object"),
        pytest.param(json.dumps({"model": ADAPTER_NAME}).encode(), "messages", id="no-messages"),
        pytest.param(
            json.dumps({"model": ADAPTER_NAME, "messages": QUESTION, "temperature": "0"}).encode(),
            "temperature",
            id="wrong-type",
        ),
        pytest.param(
            json.dumps(
                {"model": ADAPTER_NAME, "messages": [{"role": "user", "content": None}]}
            ).encode(),
            "messages[0].content",
            id="null-content",
        ),
    ],
)
def test_raw_malformed_bodies_get_400_error_bodies(server, body, param):
    status, answer = post_raw(f"{server.url}/v1/chat/completions", body)
    assert status == 400
    assert answer["error"]["param"] == param
    assert answer["error"]["type"] == "invalid_request_error"
    assert set(answer["error"]) == {"message", "type", "param", "code"}


def test_unknown_route_is_a_404_error_body(server):
    status, body = get(f"{server.url}/v1/embeddings")
    assert status == 404
    assert json.loads(body)["error"]["type"] == "invalid_request_error"


def test_merged_adapter_serves_the_same_answers_and_no_base(model_dirs, server, tmp_path):
    base, adapter = model_dirs
    merged = start_server(
        tmp_path,
        f"--base-model={base}",
        f"--adapter={adapter}",
        f"--model-name={ADAPTER_NAME}",
        "--merge",
    )
    try:
        assert [m.id for m in merged.client.models.list()] == [ADAPTER_NAME]
        with pytest.raises(openai.NotFoundError):
            greedy(merged, BASE_NAME)
        tuned = greedy(server, ADAPTER_NAME).choices[0].message.content
        assert greedy(merged, ADAPTER_NAME).choices[0].message.content == tuned
    finally:
        stop_server(merged)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param(
            ["--base-model=/nonexistent/model"], "/nonexistent/model does not exist", id="no-base"
        ),
        pytest.param(["--base-model=org/not-cached"], "offline", id="hub-id-not-cached"),
        pytest.param(["--adapter=/tmp"], "not a LoRA adapter directory", id="not-an-adapter"),
        pytest.param(
            ["--adapter=ADAPTER", "--lora-change=r=4"], "size mismatch", id="wrong-shapes"
        ),
        pytest.param(
            ["--adapter=ADAPTER", "--lora-change=target_modules=nope"], "nope", id="wrong-targets"
        ),
    ],
)
def test_startup_errors_are_one_line_and_exit_1(model_dirs, tmp_path, args, fragment):
    base, adapter = model_dirs
    if not any(a.startswith("--base-model") for a in args):
        args = [f"--base-model={base}", *args]
    change = next((a for a in args if a.startswith("--lora-change=")), None)
    if change is not None:
        # A copy of the adapter whose config no longer fits its weights or the model.
        key, value = change.removeprefix("--lora-change=").split("=")
        broken = tmp_path / "broken-adapter"
        shutil.copytree(adapter, broken)
        config = json.loads((broken / "adapter_config.json").read_text())
        config[key] = int(value) if value.isdigit() else [value]
        (broken / "adapter_config.json").write_text(json.dumps(config))
        args = [a.replace("ADAPTER", str(broken)) for a in args if a != change]
    done = subprocess.run(
        serve_command(*args), capture_output=True, text=True, env=server_env(tmp_path), timeout=120
    )
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("kubetune.serve: error: ")
    assert fragment in errors[0]
    assert "Traceback" not in done.stderr
