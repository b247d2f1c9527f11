"""Continuing from a FineTunedModel (baseModel: model://...): the trainer loads the saved
adapter, trainable, and training starts from its weights, not from a fresh adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("peft")

import torch

from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.trainerconfig import TrainerConfig
from kubetune.trainer.__main__ import main
from kubetune.trainer.errors import Unsupported
from kubetune.trainer.modeling import build_runtime, load_model, model_source
from kubetune.trainer.plan import build_plan
from kubetune.trainer.tinymodel import build_chat_examples, build_tiny_model

# peft 0.21 still calls transformers 5's deprecated is_gradient_checkpointing.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")

IDS = torch.tensor([[1, 10, 20, 30, 2, 40, 50]])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def make_plan(**lora: Any):
    spec = FineTuneJobSpec.model_validate(
        {"baseModel": "tiny", "dataset": {"training": {"url": "http://x"}}, "lora": lora}
    )
    return build_plan(spec)


def lora_weights(model) -> dict[str, torch.Tensor]:
    return {
        name.replace(".default", ""): p.detach().clone()
        for name, p in model.named_parameters()
        if "lora_" in name
    }


@pytest.fixture(scope="module")
def saved_adapter(model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """An adapter whose B matrices are not zero (a fresh one's are), saved to disk."""
    model = load_model(str(model_dir), make_plan(r=4, alpha=8, dropout=0), build_runtime(0))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    directory = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(directory)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=IDS).logits
    return directory, lora_weights(model), logits


def test_continued_adapter_has_the_saved_weights_and_is_trainable(model_dir, saved_adapter):
    directory, saved, saved_logits = saved_adapter
    # The job's own LoRA settings differ: the saved adapter's (r=4) apply.
    model = load_model(str(model_dir), make_plan(r=16, dropout=0), build_runtime(0), str(directory))
    got = lora_weights(model)
    assert got.keys() == saved.keys()
    for name, weight in saved.items():
        assert got[name].shape == weight.shape, name
        assert torch.equal(got[name], weight), f"{name} differs from the saved adapter"
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable, "the continued adapter is frozen"
    assert all("lora_" in n for n in trainable), trainable
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(input_ids=IDS).logits, saved_logits, atol=1e-6)
        fresh = load_model(str(model_dir), make_plan(dropout=0), build_runtime(0)).eval()
        assert not torch.allclose(fresh(input_ids=IDS).logits, saved_logits, atol=1e-3)


def test_continued_adapter_receives_gradients(model_dir, saved_adapter):
    directory, _, _ = saved_adapter
    model = load_model(str(model_dir), make_plan(dropout=0), build_runtime(0), str(directory))
    model(input_ids=IDS, labels=IDS).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert grads
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_missing_adapter_is_unsupported(model_dir, tmp_path):
    with pytest.raises(Unsupported, match=r"cannot continue from the adapter in .*nowhere"):
        load_model(str(model_dir), make_plan(), build_runtime(0), str(tmp_path / "nowhere"))


def make_config(tmp_path: Path, **fields: Any) -> TrainerConfig:
    return TrainerConfig.model_validate(
        {
            "name": "job",
            "namespace": "ns",
            "spec": {
                "baseModel": "model://earlier",
                "dataset": {"training": {"url": "http://x"}},
            },
            "outputDir": str(tmp_path),
            **fields,
        }
    )


def test_model_source_of_a_continued_job(tmp_path):
    assert model_source(make_config(tmp_path, baseModelId="org/base")) == "org/base"
    assert model_source(make_config(tmp_path, baseModelPath="/models/base/x")) == "/models/base/x"
    with pytest.raises(Unsupported, match="model://earlier must be mounted"):
        model_source(make_config(tmp_path))


def run_job(tmp_path: Path, model_dir: Path, name: str, adapter: Path | None) -> dict:
    data = tmp_path / "train.jsonl"
    if not data.exists():
        data.write_text("".join(json.dumps(e) + "\n" for e in build_chat_examples(20)))
    config = TrainerConfig(
        name=name,
        namespace="ns",
        spec={
            "baseModel": "model://earlier" if adapter else "tiny",
            "dataset": {"training": {"configMap": {"name": "d", "key": "train.jsonl"}}},
            "hyperparameters": {"epochs": 1, "batchSize": 4, "learningRate": 0.05, "seed": 1},
            "lora": {"dropout": 0},
        },
        training_path=str(data),
        base_model_path=str(model_dir),
        adapter_path=str(adapter) if adapter else None,
        output_dir=str(tmp_path / name),
    )
    path = tmp_path / f"{name}.json"
    path.write_text(config.model_dump_json(by_alias=True))
    code = main(["--config", str(path), f"--termination-log={tmp_path / 'termination'}"])
    assert code == 0, (tmp_path / "termination").read_text()
    return json.loads((tmp_path / name / "metrics.json").read_text())


@pytest.mark.slow
def test_second_run_starts_where_the_first_ended(tmp_path, model_dir):
    """The first evaluation of a continued run (before its first step) is the last of
    the run it continues: same validation split, same weights."""
    first = run_job(tmp_path, model_dir, "first", None)
    second = run_job(tmp_path, model_dir, "second", tmp_path / "first")
    start, end = first["evaluations"][0][1], first["evaluations"][-1][1]
    assert abs(start - end) > 1e-3, "the first run did not move its adapter"
    assert second["evaluations"][0][1] == pytest.approx(end, abs=1e-4)
