"""Training throughput: kubetune's trainer vs plain transformers Trainer + peft vs TRL's SFTTrainer.

    .venv/bin/python bench/train_throughput.py [--examples 200] [--epochs 2] [--batch 8]
    .venv/bin/python bench/train_throughput.py --phi3-mini --batch 4   # on an NVIDIA GPU

Same model, data, batch size, number of optimizer steps, tokens and hyper-parameters for
all (LoRA r=8, alpha 16 -- r=16, alpha 32 with --phi3-mini -- dropout 0.05 on
qkv/o/gate_up/down, i.e. every linear layer but the output head, lr 2e-4 with linear
decay and no warm-up, AdamW without weight decay, gradient clipping at 1.0, seed 0) and
the same precision (fp32 on the CPU, bf16 on a GPU). Everything else is each trainer's
default:

- ours: `kubetune.trainer` (assistant-only loss, length-grouped batches, logits only on
  the assistant positions, cheaper dropout masks on the CPU), run through `run.prepare`
  + `run.run_training` without the evaluations;
- hf: `transformers.Trainer` on a peft model, dynamic padding to the longest sequence of
  each batch (`DataCollatorForLanguageModeling`), loss on all tokens: the common recipe;
- trl: `trl.SFTTrainer` on the chats (`messages`) with `assistant_only_loss=True`, what
  most users pick: no packing, no padding-free batches, and TRL's own defaults, which
  include gradient checkpointing and (since TRL 1.x) a chunked LM head that never builds
  the full logits. Two departures from SFTConfig's defaults, both to compare like with
  like: bf16 only on a GPU (SFTConfig defaults to bf16 on the CPU too), and
  `max_length=None` (its 1024 would cut --phi3-mini's chats; nothing is cut for ours);
- trl_nogc: the same with `gradient_checkpointing=False`, TRL's fastest non-packed
  setting, reported for reference (not in the `ratios:` line).

The tokenization of every trainer (ours in `prepare`, TRL's in `SFTTrainer()`) happens
before the timed region.

Each variant runs in its own process (peak memory is per process: RSS on the CPU,
allocated CUDA memory on a GPU). Throughput is non-padding tokens trained per second of
the training loop: the steps for ours (metrics.json's trainSeconds), on_train_begin to
on_train_end for the Trainers. "call s" is the whole call for comparison (ours: with
loading the model and its two per-epoch checkpoints), "tok/cpu-s" the tokens per CPU
second of this process over that call, a figure that other work on a shared machine
disturbs less than wall time. Held-out loss is the assistant-token
loss of the final model on the same 20 held-out chats, measured the same way for all.
The line before last gives ours/trl_nogc, the last line is
`ratios: vs_hf=<ours/hf> vs_trl=<ours/trl>`. Needs `pip install trl`
besides the train extra; nothing is downloaded (the model is `build_tiny_model`, or
random weights from Phi-3-mini's configuration with `--phi3-mini`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
LR = 2e-4
VARIANTS = ("ours", "hf", "trl", "trl_nogc")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=200, help="generated training chats")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--phi3-mini", action="store_true", help="Phi-3-mini size (GPU), seq 2048")
    parser.add_argument("--layers", type=int, default=None, help="override layers (smoke tests)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per variant, interleaved; the fastest reported"
    )
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        result = run_variant(args.variant, args.workdir, args)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="kubetune-bench-") as tmp:
        workdir = Path(tmp)
        prepare_workdir(workdir, args)
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        for _ in range(args.repeat):
            for v in VARIANTS:
                runs[v].append(run_in_subprocess(v, workdir))
    report({v: fastest_run(r) for v, r in runs.items()}, args)
    return 0


def prepare_workdir(workdir: Path, args: argparse.Namespace) -> None:
    from kubetune.trainer.tinymodel import build_chat_examples, build_tiny_model

    build_tiny_model(workdir / "tiny")
    if args.phi3_mini:
        build_phi3_mini(workdir, args.layers)
    xbox = yaml.safe_load((ROOT / "examples" / "00-xbox-data.yaml").read_text())
    train = xbox["data"]["train.jsonl"].splitlines()
    if args.phi3_mini:
        train += [json.dumps(long_chat(i)) for i in range(args.examples)]
    else:
        train += [json.dumps(e) for e in build_chat_examples(args.examples, seed=1)]
    held_out = [json.dumps(e) for e in build_chat_examples(20, seed=2)]
    (workdir / "train.jsonl").write_text("\n".join(train) + "\n")
    (workdir / "validation.jsonl").write_text("\n".join(held_out) + "\n")
    (workdir / "args.json").write_text(json.dumps(vars(args), default=str))


def build_phi3_mini(workdir: Path, layers: int | None) -> None:
    """Random weights in Phi-3-mini-4k's shape (3.8B), saved in bf16, with the tiny tokenizer."""
    import torch
    from transformers import AutoTokenizer, Phi3Config, Phi3ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(workdir / "tiny")
    config = Phi3Config(
        num_hidden_layers=layers or 32,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        dtype="bfloat16",
    )
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Phi3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(workdir / "model")
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(workdir / "model")


def long_chat(i: int) -> dict[str, Any]:
    """A chat of about 1,900 tokens (under 2,048) with the tiny tokenizer."""
    from kubetune.trainer.tinymodel import build_chat_examples

    turns: list[dict[str, str]] = []
    for e in build_chat_examples(23, seed=100 + i):
        turns.extend(m for m in e["messages"] if m["role"] != "system")  # type: ignore[attr-defined]
    return {"messages": turns}


def model_dir(workdir: Path) -> Path:
    return workdir / ("model" if (workdir / "model").exists() else "tiny")


def fastest_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the highest throughput: the least disturbed by other work on the
    machine, which only ever slows a run down (as timeit reports the minimum)."""
    return max(runs, key=lambda r: float(r["tokens_per_s"]))


def run_in_subprocess(variant: str, workdir: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--variant", variant, "--workdir", str(workdir)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
    raise SystemExit(f"variant {variant} failed with exit code {done.returncode}")


def run_variant(variant: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    from kubetune.trainer.data import tokenize_example

    saved = json.loads((workdir / "args.json").read_text())
    epochs, batch = saved["epochs"], saved["batch"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir(workdir))
    held_out = [
        tokenize_example(tokenizer, json.loads(line)["messages"])
        for line in (workdir / "validation.jsonl").read_text().splitlines()
    ]
    train_messages = [
        json.loads(line)["messages"] for line in (workdir / "train.jsonl").read_text().splitlines()
    ]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    runner = {
        "ours": train_ours,
        "hf": train_hf,
        "trl": train_trl,
        "trl_nogc": train_trl_no_checkpointing,
    }[variant]
    model, tokens, seconds = runner(workdir, train_messages, tokenizer, epochs, batch)
    loss = held_out_loss(model, held_out, tokenizer.pad_token_id, batch)
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in model.parameters())
    return {
        "tokens": tokens,
        "seconds": seconds,
        "call_seconds": CALL_SECONDS[-1],
        "tokens_per_cpu_s": tokens / CALL_CPU_SECONDS[-1],
        "tokens_per_s": tokens / seconds,
        "peak_mb": peak,
        "held_out_loss": loss,
        "parameters": params,
        "threads": torch.get_num_threads(),
    }


def lora_rank(workdir: Path) -> int:
    """8 on the tiny model (as in the calibration notes), 16 at Phi-3-mini size."""
    return 16 if json.loads((workdir / "args.json").read_text())["phi3_mini"] else 8


def lora_config(rank: int) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.05,
        target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )


def train_ours(
    workdir: Path, messages: list[Any], tokenizer: Any, epochs: int, batch: int
) -> tuple[Any, int, float]:
    from kubetune.api.trainerconfig import TrainerConfig
    from kubetune.trainer.loop import World
    from kubetune.trainer.run import Options, prepare, run_training

    spec = {
        "baseModel": "bench",
        "dataset": {"training": {"url": "http://unused"}, "validation": {"url": "http://unused"}},
        "hyperparameters": {
            "epochs": epochs,
            "batchSize": batch,
            "learningRate": LR,
            "warmupRatio": 0.0,
            "seed": 0,
        },
        "lora": {"r": lora_rank(workdir), "alpha": 2 * lora_rank(workdir), "dropout": 0.05},
    }
    config = TrainerConfig(
        name="bench",
        namespace="bench",
        spec=spec,
        training_path=str(workdir / "train.jsonl"),
        validation_path=str(workdir / "validation.jsonl"),
        base_model_path=str(model_dir(workdir)),
        output_dir=tempfile.mkdtemp(prefix="out-ours-", dir=workdir),
    )
    prepared = prepare(config, 1)
    started, cpu = time.perf_counter(), time.process_time()
    metrics = run_training(config, Options(evaluate=False, save_steps=10**9), World(), prepared)
    CALL_SECONDS.append(time.perf_counter() - started)
    CALL_CPU_SECONDS.append(time.process_time() - cpu)
    seconds = float(metrics["trainSeconds"])  # the steps only, as the others' callbacks time
    # The trained adapter as written to the output directory, evaluated like the others'.
    from peft import PeftModel

    base = load_base(workdir)
    model = PeftModel.from_pretrained(base, config.output_dir)
    return model, int(metrics["seenTokens"]), seconds


def train_hf(
    workdir: Path, messages: list[Any], tokenizer: Any, epochs: int, batch: int
) -> tuple[Any, int, float]:
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    model = load_peft_model(workdir)
    ids = [tokenizer.apply_chat_template(m, tokenize=True)["input_ids"] for m in messages]
    dataset = Dataset.from_dict({"input_ids": ids})
    timer = LoopTimer()
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**shared_arguments(workdir / "out-hf", epochs, batch)),
        train_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[timer],
    )
    started, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    CALL_SECONDS.append(time.perf_counter() - started)
    CALL_CPU_SECONDS.append(time.process_time() - cpu)
    return model, epochs * sum(len(x) for x in ids), timer.seconds


def train_trl(
    workdir: Path,
    messages: list[Any],
    tokenizer: Any,
    epochs: int,
    batch: int,
    *,
    checkpointing: bool = True,
) -> tuple[Any, int, float]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model = load_peft_model(workdir)
    config = SFTConfig(
        **shared_arguments(workdir / "out-trl", epochs, batch),
        assistant_only_loss=True,
        gradient_checkpointing=checkpointing,  # True is SFTConfig's default
        max_length=None,  # the default (1024) would cut --phi3-mini's chats; ours does not
    )
    timer = LoopTimer()
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_dict({"messages": messages}),
        processing_class=tokenizer,
        callbacks=[timer],
    )
    tokens = epochs * sum(len(x) for x in trainer.train_dataset["input_ids"])
    started, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    CALL_SECONDS.append(time.perf_counter() - started)
    CALL_CPU_SECONDS.append(time.process_time() - cpu)
    return model, tokens, timer.seconds


def train_trl_no_checkpointing(
    workdir: Path, messages: list[Any], tokenizer: Any, epochs: int, batch: int
) -> tuple[Any, int, float]:
    return train_trl(workdir, messages, tokenizer, epochs, batch, checkpointing=False)


CALL_SECONDS: list[float] = []
"""Wall time of the whole training call (ours: with loading the model and two checkpoints)."""
CALL_CPU_SECONDS: list[float] = []
"""CPU time of the process during that call: less sensitive to other work on the machine."""


def _callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


class LoopTimer(_callback_base()):  # type: ignore[misc]
    """Seconds from the Trainer's on_train_begin to on_train_end: its training loop."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds = 0.0

    def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
        self.started = time.perf_counter()

    def on_train_end(self, *args: Any, **kwargs: Any) -> None:
        self.seconds = time.perf_counter() - self.started


def load_base(workdir: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    gpu = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(
        model_dir(workdir),
        dtype=torch.bfloat16 if gpu else torch.float32,
        attn_implementation="sdpa",
    )
    model.config.use_cache = False
    return model.to("cuda") if gpu else model


def load_peft_model(workdir: Path) -> Any:
    import torch
    from peft import get_peft_model

    model = load_base(workdir)
    torch.manual_seed(0)
    return get_peft_model(model, lora_config(lora_rank(workdir)))


def shared_arguments(output: Path, epochs: int, batch: int) -> dict[str, Any]:
    """What the Trainers share with ours; everything else stays at each Trainer's default.

    Hyper-parameters as ours, the same precision (fp32 on the CPU, where ours has no
    bf16, bf16 on a GPU: SFTConfig's own default is bf16 everywhere), and no logging,
    saving or evaluation inside the timed loop.
    """
    import torch

    return {
        "output_dir": str(output),
        "num_train_epochs": epochs,
        "per_device_train_batch_size": batch,
        "learning_rate": LR,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "seed": 0,
        "logging_steps": 10**6,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "bf16": torch.cuda.is_available(),
        "use_cpu": not torch.cuda.is_available(),
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }


def held_out_loss(model: Any, examples: list[Any], pad_id: int, batch: int) -> float:
    from kubetune.trainer.loop import TokenLoss, World, evaluate
    from kubetune.trainer.modeling import build_runtime

    runtime = build_runtime(0)
    loss, _ = evaluate(
        TokenLoss(model), examples, batch_size=batch, pad_id=pad_id, world=World(), runtime=runtime
    )
    return loss


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device={device} threads={results['ours']['threads']} cpus={os.cpu_count()}")
    print(
        f"examples={args.examples + 12} epochs={args.epochs} batch={args.batch} "
        f"runs={args.repeat} (the fastest of each)"
    )
    print(
        f"{'variant':<8} {'tokens/s':>9} {'loop s':>7} {'call s':>7} {'tok/cpu-s':>10} "
        f"{'peak MB':>8} {'held-out loss':>14}"
    )
    for name, r in results.items():
        print(
            f"{name:<8} {r['tokens_per_s']:>9.0f} {r['seconds']:>7.2f} {r['call_seconds']:>7.2f} "
            f"{r['tokens_per_cpu_s']:>10.0f} {r['peak_mb']:>8.0f} {r['held_out_loss']:>14.4f}"
        )
    if args.phi3_mini and torch.cuda.is_available():
        peak = measure_bf16_peak()
        for name, r in results.items():
            mfu = 4 * r["parameters"] * r["tokens_per_s"] / peak
            print(
                f"{name}: mfu={mfu:.1%} (4*N FLOPs/token, peak bf16 matmul {peak / 1e12:.0f} TF/s)"
            )
    ours = results["ours"]["tokens_per_s"]
    vs_hf = ours / results["hf"]["tokens_per_s"]
    vs_trl = ours / results["trl"]["tokens_per_s"]
    print(
        f"vs_trl without gradient checkpointing: {ours / results['trl_nogc']['tokens_per_s']:.2f}"
    )
    print(f"ratios: vs_hf={vs_hf:.2f} vs_trl={vs_trl:.2f}")


def measure_bf16_peak() -> float:
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
    return 20 * 2 * 8192**3 / (time.perf_counter() - started)


if __name__ == "__main__":
    sys.exit(main())
