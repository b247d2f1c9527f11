"""`python -m kubetune.trainer`: the exit codes of what the job itself gets wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from kubetune.api.trainerconfig import TrainerConfig
from kubetune.datavalidation import BAD_INPUT_EXIT_CODE
from kubetune.trainer.__main__ import main
from kubetune.trainer.errors import UNSUPPORTED_EXIT_CODE
from kubetune.trainer.tinymodel import build_chat_examples, build_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def config_file(tmp_path: Path, model: Path | None, lines: list[str], **spec: Any) -> Path:
    (tmp_path / "train.jsonl").write_text("".join(line + "\n" for line in lines))
    config = TrainerConfig(
        name="job",
        namespace="ns",
        spec={
            "baseModel": spec.pop("base_model", "tiny"),
            "dataset": {"training": {"configMap": {"name": "d", "key": "train.jsonl"}}},
            **spec,
        },
        training_path=str(tmp_path / "train.jsonl"),
        base_model_path=str(model) if model else None,
        output_dir=str(tmp_path / "out"),
    )
    path = tmp_path / "config.json"
    path.write_text(config.model_dump_json(by_alias=True))
    return path


def good_lines(n: int = 12) -> list[str]:
    return [json.dumps(e) for e in build_chat_examples(n)]


def run(config: Path, tmp_path: Path, *args: str) -> int:
    return main(["--config", str(config), f"--termination-log={tmp_path / 'termination'}", *args])


def test_bad_data_exits_65_with_every_problem(tmp_path, model_dir, capsys):
    lines = good_lines()
    lines[2] = '{"messages": []}'
    lines[7] = "{broken"
    config = config_file(tmp_path, model_dir, lines)
    assert run(config, tmp_path) == BAD_INPUT_EXIT_CODE
    err = capsys.readouterr().err
    train = tmp_path / "train.jsonl"
    assert f"{train}:3: messages is empty" in err
    assert f"{train}:8: invalid JSON: Expecting property name enclosed in double quotes" in err
    message = (tmp_path / "termination").read_text()
    assert message.startswith("invalid training data (2 problem(s))")
    assert f"{train}:3: messages is empty" in message
    assert not (tmp_path / "out").exists()


def test_too_long_examples_exit_65(tmp_path, model_dir, capsys):
    config = config_file(
        tmp_path, model_dir, good_lines(), hyperparameters={"maxSequenceLength": 64}
    )
    assert run(config, tmp_path) == BAD_INPUT_EXIT_CODE
    assert "tokens, over the maximum of 64" in capsys.readouterr().err


def test_termination_log_is_capped(tmp_path, model_dir):
    lines = ['{"messages": []}'] * 400
    assert run(config_file(tmp_path, model_dir, lines), tmp_path) == BAD_INPUT_EXIT_CODE
    assert len((tmp_path / "termination").read_bytes()) == 4096


def test_qlora_without_gpu_exits_78(tmp_path, model_dir, capsys):
    config = config_file(tmp_path, model_dir, good_lines(), quantization="4bit")
    assert run(config, tmp_path) == UNSUPPORTED_EXIT_CODE
    assert "QLoRA" in capsys.readouterr().err
    assert "QLoRA" in (tmp_path / "termination").read_text()


def test_missing_base_model_exits_78(tmp_path, capsys):
    config = config_file(tmp_path, tmp_path / "nowhere", good_lines())
    assert run(config, tmp_path) == UNSUPPORTED_EXIT_CODE
    assert "is not available locally" in capsys.readouterr().err


def test_uncached_hub_id_exits_78_without_downloading(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    config = config_file(
        tmp_path, None, good_lines(), base_model="microsoft/Phi-3-mini-4k-instruct"
    )
    assert run(config, tmp_path) == UNSUPPORTED_EXIT_CODE
    err = capsys.readouterr().err
    assert "microsoft/Phi-3-mini-4k-instruct is not available locally" in err


def test_unmounted_pvc_model_exits_78(tmp_path, capsys):
    config = config_file(tmp_path, None, good_lines(), base_model="pvc://models/phi3")
    assert run(config, tmp_path) == UNSUPPORTED_EXIT_CODE
    assert "must be mounted" in capsys.readouterr().err


def test_invalid_config_exits_78(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text('{"name": "job"}')
    assert run(path, tmp_path) == UNSUPPORTED_EXIT_CODE
    assert "invalid config" in capsys.readouterr().err


def test_zero_processes_exits_78(tmp_path, model_dir):
    config = config_file(tmp_path, model_dir, good_lines())
    assert run(config, tmp_path, "--nproc-per-node=0") == UNSUPPORTED_EXIT_CODE


def test_module_entrypoint_exit_code(tmp_path, model_dir):
    """The pod's exact command line, as a subprocess."""
    lines = good_lines()
    lines[0] = "[]"
    config = config_file(tmp_path, model_dir, lines)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubetune.trainer",
            "--config",
            str(config),
            "--nproc-per-node=1",
            f"--termination-log={tmp_path / 'termination'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == BAD_INPUT_EXIT_CODE
    assert "train.jsonl:1: line is a list, not a JSON object" in done.stderr


@pytest.mark.slow
# peft 0.21 still calls transformers 5's deprecated is_gradient_checkpointing.
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")
def test_small_run_in_process_with_merged_model(tmp_path, model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = config_file(
        tmp_path, model_dir, good_lines(20), hyperparameters={"epochs": 1, "batchSize": 4}
    )
    assert run(config, tmp_path, "--merge") == 0
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 5  # 18 training examples after the 0.1 split, 4 a step
    ids = torch.tensor([[1, 10, 20, 30, 2, 40, 50]])
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    adapted = PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        want = adapted(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert (out / "merged" / "tokenizer.json").exists()


def test_url_sources_are_fetched(tmp_path):
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from kubetune.trainer.sources import fetch_sources

    served = tmp_path / "served"
    served.mkdir()
    (served / "train.jsonl").write_text("\n".join(good_lines()) + "\n")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        config = TrainerConfig(
            name="job",
            namespace="ns",
            spec={
                "baseModel": "m",
                "dataset": {"training": {"url": f"{base}/train.jsonl?sig=secret"}},
            },
            output_dir=str(tmp_path / "out"),
        )
        fetched = fetch_sources(config, tmp_path / "data")
        assert fetched.training_path == str(tmp_path / "data" / "training.jsonl")
        assert Path(fetched.training_path).read_text() == (served / "train.jsonl").read_text()
        missing = config.model_copy(update={"spec": config.spec.model_copy(deep=True)})
        missing.spec.dataset.training.url = f"{base}/nope.jsonl?sig=secret"
        with pytest.raises(OSError, match="cannot download") as caught:
            fetch_sources(missing, tmp_path / "data2")
        assert "secret" not in str(caught.value)
    finally:
        server.shutdown()
        server.server_close()


def test_azure_blob_sources_are_unsupported(tmp_path):
    from kubetune.trainer.errors import Unsupported
    from kubetune.trainer.sources import fetch_sources

    config = TrainerConfig(
        name="job",
        namespace="ns",
        spec={
            "baseModel": "m",
            "dataset": {
                "training": {
                    "azureBlob": {
                        "accountUrl": "https://a.blob.core.windows.net",
                        "container": "c",
                        "blob": "t.jsonl",
                    }
                }
            },
        },
        output_dir=str(tmp_path / "out"),
    )
    with pytest.raises(Unsupported, match="azureBlob"):
        fetch_sources(config, tmp_path / "data")
