"""One training run, from a TrainerConfig to an adapter and metrics.json.

`prepare` does everything that can fail because of the job rather than the
machine (data validation, the tokenizer, example lengths) without loading the
model, so the launcher can run it before it starts any worker. `run_training`
is what each (data-parallel) process runs: load the model with a LoRA adapter,
resume from the latest verified checkpoint, train epoch by epoch, evaluate at
the start and after each epoch, checkpoint every `save_steps` steps and each
epoch, report progress, and at the end write the adapter, the tokenizer and
`metrics.json` into the output directory (`metrics.json` last: its presence
means the run is complete, and a restarted pod then exits 0 at once).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune.api.finetunejob import Metrics
from kubetune.api.trainerconfig import TrainerConfig
from kubetune.trainer import checkpoints as ckpt
from kubetune.trainer.data import Example, load_datasets, plan_epoch, shard, tokenize_all
from kubetune.trainer.errors import Stopped, Unsupported
from kubetune.trainer.modeling import load_tokenizer, model_source
from kubetune.trainer.plan import Plan, build_plan
from kubetune.trainer.progress import DEFAULT_INTERVAL, Reporter
from kubetune.trainer.results import (
    METRICS,
    api_metrics,
    build_metrics,
    build_progress,
    write_result,
)

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

    from kubetune.trainer.loop import World

log = logging.getLogger(__name__)

CHECKPOINTS_PER_RUN = 10
LOG_EVERY = 30.0
"""Seconds between two progress lines in the log."""


@dataclass(frozen=True)
class Options:
    """How to run, beyond the job itself (command-line flags)."""

    save_steps: int | None = None
    """Checkpoint every N steps; None: about CHECKPOINTS_PER_RUN per run. Always each epoch."""
    report_interval: float = DEFAULT_INTERVAL
    evaluate: bool = True
    merge: bool = False
    """Also write the merged full model into output_dir/merged."""


@dataclass(frozen=True)
class Prepared:
    plan: Plan
    source: str
    tokenizer: PreTrainedTokenizerBase
    train: list[Example]
    validation: list[Example]
    fingerprint: str


def prepare(config: TrainerConfig, processes: int) -> Prepared:
    """Validates and tokenizes the data; raises BadInput or Unsupported."""
    from transformers import AutoConfig

    plan = build_plan(config.spec)
    if config.training_path is None:
        raise Unsupported("the training file is not mounted (trainingPath is empty)")
    training = Path(config.training_path)
    validation = Path(config.validation_path) if config.validation_path else None
    raw = load_datasets(training, validation, split=plan.validation_split, seed=plan.seed)
    source = model_source(config)
    tokenizer = load_tokenizer(source)
    context = getattr(
        AutoConfig.from_pretrained(source, local_files_only=True), "max_position_embeddings", None
    )
    limit = plan.max_sequence_length or context or tokenizer.model_max_length
    if context and limit > context:
        limit = context
    train = tokenize_all(tokenizer, raw.training, path=str(training), max_tokens=limit)
    val = tokenize_all(tokenizer, raw.validation, path=raw.validation_name, max_tokens=limit)
    if plan.steps_per_epoch(len(train), processes) == 0:
        raise Unsupported(
            f"{len(train)} training examples cannot be shared by {processes} processes"
        )
    digest = hashlib.sha256()
    for path in (training, validation):
        digest.update(path.read_bytes() if path else b"-")
    digest.update(json.dumps([asdict(plan), source, processes]).encode())
    return Prepared(plan, source, tokenizer, train, val, digest.hexdigest())


def run_training(
    config: TrainerConfig, options: Options, world: World, prepared: Prepared
) -> dict[str, Any]:
    """Trains (or resumes, or finds the run complete) and returns the metrics."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from kubetune.trainer import loop
    from kubetune.trainer.modeling import build_runtime, load_model
    from kubetune.trainer.plan import learning_rate_factor

    output = Path(config.output_dir)
    # Every process reads it (they share the output directory); rank 0 reports.
    if (done := completed_metrics(config, options, report=world.is_main)) is not None:
        return done
    stop = _StopFlag()
    reporter = Reporter(
        config.progress_url if world.is_main else None,
        config.token_path,
        interval=options.report_interval,
    )
    try:
        plan, train = prepared.plan, prepared.train
        runtime = build_runtime(world.local_rank)
        model = load_model(prepared.source, plan, runtime, config.adapter_path)
        parameters = [p for p in model.parameters() if p.requires_grad]
        # fused: one kernel for all parameters (CPU and CUDA), as transformers' default.
        optimizer = torch.optim.AdamW(
            parameters, lr=plan.learning_rate, weight_decay=0.0, fused=True
        )
        per_epoch = plan.steps_per_epoch(len(train), world.size)
        total = per_epoch * plan.epochs
        warmup = plan.warmup_steps(total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: learning_rate_factor(s, warmup=warmup, total=total)
        )
        if world.is_main:
            ckpt.clean_partial(output)
        state = _resume(output, prepared.fingerprint, model, optimizer, scheduler)
        if runtime.device.type == "cpu":
            loop.use_cpu_dropout(model)
        loss_module = loop.TokenLoss(model)
        module: torch.nn.Module = loss_module
        if world.size > 1:
            module = DistributedDataParallel(
                loss_module,
                device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
                find_unused_parameters=False,
            )
        save_every = options.save_steps or max(1, math.ceil(total / CHECKPOINTS_PER_RUN))
        pad_id = int(prepared.tokenizer.pad_token_id or 0)

        def evaluate() -> None:
            if options.evaluate and prepared.validation:
                loss, accuracy = loop.evaluate(
                    loss_module,
                    prepared.validation,
                    batch_size=plan.batch_size,
                    pad_id=pad_id,
                    world=world,
                    runtime=runtime,
                )
                state.evaluations.append((state.step, loss, accuracy))
                log.info(
                    "evaluation step=%d validation_loss=%.4f token_accuracy=%.4f",
                    state.step,
                    loss,
                    accuracy,
                )

        def save() -> None:
            if world.is_main:
                ckpt.save_checkpoint(
                    output, state, lambda d: _write(d, model, optimizer, scheduler)
                )
            if world.size > 1:
                dist.barrier()

        if not state.evaluations:
            evaluate()
        lengths = [len(e.input_ids) for e in train]
        session_start, session_steps = time.monotonic(), 0
        next_log = session_start + LOG_EVERY
        loss_module.train()
        while state.epoch < plan.epochs:
            batches = plan_epoch(
                lengths,
                batch=plan.batch_size * world.size,
                epoch=state.epoch,
                seed=plan.seed,
                drop_remainder=world.size,
            )
            for indices in batches[state.batch :]:
                started = time.perf_counter()
                mine = [train[i] for i in shard(indices, world.size, world.rank)]
                step_tokens, stopping, seen = loop.all_reduce(
                    [
                        sum(e.trained_tokens for e in mine),
                        float(stop.raised),
                        sum(len(e.input_ids) for e in mine),
                    ],
                    world,
                    runtime.device,
                )
                if stopping:
                    save()
                    raise Stopped()
                torch.manual_seed(loop.step_seed(plan.seed, state.step, world.rank))
                micro = loop.build_micro_batches(
                    mine, plan.accumulation, pad_id=pad_id, padding_free=runtime.padding_free
                )
                local_loss = loop.train_step(
                    module,
                    parameters,
                    optimizer,
                    scheduler,
                    micro,
                    step_tokens=int(max(step_tokens, 1)),
                    world=world,
                    runtime=runtime,
                )
                (loss_sum,) = loop.all_reduce([local_loss], world, runtime.device)
                state.elapsed += time.perf_counter() - started
                state.step += 1
                state.batch += 1
                state.trained_tokens += int(step_tokens)
                state.seen_tokens += int(seen)
                state.train_losses.append((state.step, loss_sum / max(step_tokens, 1)))
                session_steps += 1
                rate = (time.monotonic() - session_start) / session_steps
                reporter.update(build_progress(state, total, per_epoch, rate))
                if world.is_main and time.monotonic() >= next_log:
                    next_log = time.monotonic() + LOG_EVERY
                    _log_step(state, total)
                if state.step % save_every == 0 and state.batch < len(batches):
                    save()
            state.epoch += 1
            state.batch = 0
            evaluate()
            save()
        metrics = build_metrics(state, per_epoch)
        if world.is_main:
            write_result(
                output,
                model,
                prepared.tokenizer,
                metrics,
                merge=options.merge and not plan.four_bit,
            )
            log.info(
                "training complete %s",
                " ".join(f"{k}={v}" for k, v in api_metrics(metrics).items()),
            )
        reporter.update(
            build_progress(state, total, per_epoch, 0.0),
            Metrics.model_validate(api_metrics(metrics)),
        )
        return metrics
    finally:
        reporter.close()
        stop.restore()


def completed_metrics(
    config: TrainerConfig, options: Options, *, report: bool = True
) -> dict[str, Any] | None:
    """The metrics of a run that already finished in this output directory (reported again)."""
    path = Path(config.output_dir) / METRICS
    if not path.exists():
        return None
    done: dict[str, Any] = json.loads(path.read_text())
    log.info("already complete path=%s", path)
    if report:
        reporter = Reporter(
            config.progress_url, config.token_path, interval=options.report_interval
        )
        reporter.update(metrics=Metrics.model_validate(api_metrics(done)))
        reporter.close()
    return done


class _StopFlag:
    """Set by SIGTERM (the kubelet's stop): finish the step, checkpoint, exit 143."""

    def __init__(self) -> None:
        self.raised = False
        # Signal handlers can only be set from the main thread (tests may use others).
        self._previous: Any = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        log.warning("SIGTERM: checkpointing after this step")
        self.raised = True

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _log_step(state: ckpt.TrainState, total: int) -> None:
    rate = state.seen_tokens / state.elapsed if state.elapsed else 0.0
    log.info(
        "step=%d/%d epoch=%d train_loss=%.4f tokens_per_s=%.0f",
        state.step,
        total,
        state.epoch,
        state.train_losses[-1][1],
        rate,
    )


def _resume(
    output: Path, fingerprint: str, model: PeftModel, optimizer: Any, scheduler: Any
) -> ckpt.TrainState:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    found = ckpt.latest_checkpoint(output)
    if found is None:
        return ckpt.TrainState(fingerprint=fingerprint)
    path, state = found
    if state.fingerprint != fingerprint:
        raise Unsupported(
            f"{ckpt.checkpoint_dir(output)} holds checkpoints of a different job configuration "
            "(data, hyper-parameters, base model or process count changed); use a new output "
            "directory or delete them"
        )
    result = set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise Unsupported(f"checkpoint {path} does not fit the adapter: {unexpected}")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    state.resumed_from.append(state.step)
    log.info("resuming path=%s step=%d epoch=%d", path, state.step, state.epoch)
    return state


def _write(directory: Path, model: PeftModel, optimizer: Any, scheduler: Any) -> None:
    import torch

    model.save_pretrained(str(directory))
    torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    torch.save(scheduler.state_dict(), directory / "scheduler.pt")
