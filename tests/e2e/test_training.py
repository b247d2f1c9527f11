"""`python -m kubetune.trainer` end to end on the CPU, with the tiny Phi-3 built locally.

Each run is a real subprocess, as in the training pod: fine-tuning on the seed's Xbox
examples plus generated ones, the adapter loaded back, progress reports to a local
server, SIGKILL and resume, a damaged checkpoint, SIGTERM, and two processes with gloo.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("peft")


import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from kubetune.api.trainerconfig import TrainerConfig
from kubetune.trainer.tinymodel import build_chat_examples, build_tiny_model

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
XBOX = yaml.safe_load((ROOT / "examples" / "00-xbox-data.yaml").read_text())["data"]["train.jsonl"]
TOKEN = "pod-bound-token"


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.reports: list[tuple[float, str | None, dict[str, Any]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/namespaces/ns/finetunejobs/job/report"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.reports.append((time.monotonic(), self.headers.get("Authorization"), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("training")
    build_tiny_model(root / "model")
    lines = XBOX.splitlines() + [json.dumps(e) for e in build_chat_examples(200, seed=1)]
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    (root / "token").write_text(TOKEN)
    return root


def unreachable_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/report"


def write_config(
    workdir: Path, name: str, *, url: str | None = None, training: str = "train.jsonl", **hp: Any
) -> Path:
    spec = {
        "baseModel": "tiny-phi3",
        "dataset": {"training": {"configMap": {"name": "data", "key": "train.jsonl"}}},
        "hyperparameters": {"epochs": 2, "batchSize": 8, "seed": 0, **hp},
        "lora": {"r": 8, "alpha": 16},
    }
    config = TrainerConfig(
        name="job",
        namespace="ns",
        spec=spec,
        training_path=str(workdir / training),
        base_model_path=str(workdir / "model"),
        output_dir=str(workdir / name),
        progress_url=url or unreachable_url(),
        token_path=str(workdir / "token"),
    )
    path = workdir / f"{name}.json"
    path.write_text(config.model_dump_json(by_alias=True))
    return path


def trainer(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "kubetune.trainer", "--config", str(config), *args]


def train(config: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(trainer(config, *args), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def metrics_of(workdir: Path, name: str) -> dict[str, Any]:
    return dict(json.loads((workdir / name / "metrics.json").read_text()))


@pytest.fixture(scope="module")
def reference(workdir: Path, receiver: Receiver) -> dict[str, Any]:
    """One uninterrupted single-process run: 2 epochs of 24 steps, reporting to `receiver`."""
    train(write_config(workdir, "reference", url=receiver.url), "--report-interval=0.5")
    return metrics_of(workdir, "reference")


def test_fine_tuning_lowers_validation_loss(reference):
    assert reference["steps"] == 48
    assert reference["epochs"] == 2
    assert reference["validationLoss"] < reference["initialValidationLoss"] - 0.1
    losses = [loss for _, loss, _ in reference["evaluations"]]
    assert losses == sorted(losses, reverse=True)
    assert reference["perplexity"] == pytest.approx(2.718281828 ** reference["validationLoss"])
    assert 0 <= reference["tokenAccuracy"] <= 1
    assert reference["trainedTokens"] > 0
    assert reference["seenTokens"] > reference["trainedTokens"]
    assert reference["resumedFrom"] == []


def test_output_is_a_peft_adapter_with_tokenizer(workdir, reference):
    out = workdir / "reference"
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "metrics.json"} <= names
    assert {"tokenizer.json", "tokenizer_config.json"} <= names
    assert not [n for n in names if n.startswith(".tmp")]
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA"
    assert (adapter["r"], adapter["lora_alpha"]) == (8, 16)
    assert set(adapter["target_modules"]) == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}


# peft 0.21 still calls transformers 5's deprecated is_gradient_checkpointing.
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")
def test_adapter_loads_back_and_changes_the_answers(workdir, reference):
    tokenizer = AutoTokenizer.from_pretrained(workdir / "reference")
    messages = json.loads(XBOX.splitlines()[3])["messages"]
    prompt = tokenizer.apply_chat_template(
        messages[:2], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    answer = tokenizer(messages[2]["content"] + "<|end|>", add_special_tokens=False)["input_ids"]

    def answer_logprob_and_text(model: torch.nn.Module) -> tuple[float, str]:
        ids = torch.cat([prompt["input_ids"], torch.tensor([answer])], dim=1)
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits[0, -len(answer) - 1 : -1]
            generated = model.generate(**prompt, max_new_tokens=20, do_sample=False)
        logprob = torch.log_softmax(logits, -1)[range(len(answer)), answer].sum().item()
        return logprob, tokenizer.decode(generated[0, prompt["input_ids"].shape[1] :])

    base = AutoModelForCausalLM.from_pretrained(workdir / "model").eval()
    before = answer_logprob_and_text(base)
    tuned = PeftModel.from_pretrained(base, str(workdir / "reference")).eval()
    after = answer_logprob_and_text(tuned)
    assert after[1] != before[1]
    assert after[0] > before[0] + 5  # the seed's answer became far more likely


def test_progress_reaches_the_operator_with_the_token(reference, receiver):
    reports = receiver.reports
    assert reports
    assert {auth for _, auth, _ in reports} == {f"Bearer {TOKEN}"}
    # Throttled to one POST per 0.5 s (--report-interval): 48 steps' updates in a few
    # seconds. Arrival times carry each request's scheduling delay on this shared
    # machine, so the bound is on their count over their span (a late first arrival
    # shortens the span by its delay; 1 s of that is allowed), not on each gap.
    times = [t for t, _, _ in reports]
    assert len(times) <= (times[-1] - times[0] + 1.0) / 0.5 + 1
    assert len(times) < reference["steps"]
    progress = [body["progress"] for _, _, body in reports if "progress" in body]
    assert {"epoch", "step", "totalSteps", "trainLoss", "eta", "tokensPerSecond"} <= set(
        progress[0]
    )
    assert progress[-1]["step"] == progress[-1]["totalSteps"] == 48
    assert progress[-1]["tokensPerSecond"] == pytest.approx(reference["tokensPerSecond"])
    final = reports[-1][2]["metrics"]
    assert final["validationLoss"] == pytest.approx(reference["validationLoss"])
    assert set(final) == {"trainLoss", "validationLoss", "perplexity", "tokenAccuracy"}


def kill_after_checkpoint(config: Path, checkpoints: Path, step: int) -> list[int]:
    """Starts a run, SIGKILLs it once `step` is checkpointed; returns the complete steps."""
    process = subprocess.Popen(
        trainer(config, "--save-steps=3"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    want = checkpoints / f"step-{step:08d}"
    deadline = time.monotonic() + 180
    while not want.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "finished before it could be killed"
    return sorted(int(p.name.split("-")[1]) for p in checkpoints.glob("step-*"))


def test_resume_after_sigkill_continues_from_the_saved_step(workdir, reference):
    config = write_config(workdir, "killed")
    saved = kill_after_checkpoint(config, workdir / "killed" / "checkpoints", 6)
    assert saved
    assert saved[-1] >= 6
    assert not (workdir / "killed" / "metrics.json").exists()
    train(config, "--save-steps=3")
    metrics = metrics_of(workdir, "killed")
    assert metrics["resumedFrom"] == [saved[-1]]
    assert metrics["steps"] == reference["steps"]
    # The same trajectory as without the kill: steps, losses and the result.
    steps = [s for s, _ in metrics["trainLosses"]]
    assert steps == list(range(1, 49))
    got = [loss for _, loss in metrics["trainLosses"]]
    want = [loss for _, loss in reference["trainLosses"]]
    assert got == pytest.approx(want, rel=1e-4)
    assert metrics["validationLoss"] == pytest.approx(reference["validationLoss"], rel=1e-4)


def test_damaged_last_checkpoint_falls_back_to_the_previous(workdir, reference):
    config = write_config(workdir, "damaged")
    checkpoints = workdir / "damaged" / "checkpoints"
    saved = kill_after_checkpoint(config, checkpoints, 9)
    assert len(saved) >= 2
    last = checkpoints / f"step-{saved[-1]:08d}" / "adapter_model.safetensors"
    last.write_bytes(last.read_bytes()[:-100])  # a torn write
    train(config, "--save-steps=3")
    metrics = metrics_of(workdir, "damaged")
    assert metrics["resumedFrom"] == [saved[-2]]
    assert metrics["validationLoss"] == pytest.approx(reference["validationLoss"], rel=1e-4)


def test_sigterm_checkpoints_the_step_and_exits_143(workdir):
    config = write_config(workdir, "terminated")
    process = subprocess.Popen(trainer(config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = workdir / "terminated" / "checkpoints"
    deadline = time.monotonic() + 180
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the automatic schedule saves about every 5 steps
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    steps = sorted(int(p.name.split("-")[1]) for p in first.glob("step-*"))
    state = json.loads((first / f"step-{steps[-1]:08d}" / "state.json").read_text())
    assert state["step"] == steps[-1] > 0
    assert not (workdir / "terminated" / "metrics.json").exists()


def test_finished_run_is_not_repeated(workdir, reference):
    config = write_config(workdir, "reference")
    adapter = workdir / "reference" / "adapter_model.safetensors"
    before = adapter.stat().st_mtime_ns
    train(config)
    assert adapter.stat().st_mtime_ns == before


def test_two_processes_with_gloo_give_the_same_adapter_format(workdir, reference):
    config = write_config(workdir, "ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        trainer(config, "--nproc-per-node=2"), capture_output=True, text=True, env=env, timeout=280
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = metrics_of(workdir, "ddp")
    # 191 training examples, 16 per step (8 per process): 12 steps an epoch.
    assert metrics["steps"] == 24
    assert metrics["validationLoss"] < metrics["initialValidationLoss"] - 0.05
    single = load_file(workdir / "reference" / "adapter_model.safetensors")
    double = load_file(workdir / "ddp" / "adapter_model.safetensors")
    assert {k: v.shape for k, v in double.items()} == {k: v.shape for k, v in single.items()}
    configs = [
        json.loads((workdir / n / "adapter_config.json").read_text()) for n in ("reference", "ddp")
    ]
    for c in configs:
        c["target_modules"] = sorted(c["target_modules"])  # peft keeps them as a set
    assert configs[0] == configs[1]
