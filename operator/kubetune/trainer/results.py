"""What a run leaves behind and tells the operator: metrics, progress, the final adapter.

`write_result` puts the adapter and tokenizer (and with --merge the merged model)
into the output directory, each file fsynced and moved into place, then
`metrics.json` last: its presence means the run is complete. `build_metrics` is
that file's content (docs/trainer.md lists the keys); `api_metrics` its subset
that is the API's `Metrics`; `build_progress` the API's `Progress` for a report.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune.api.finetunejob import Progress
from kubetune.trainer import checkpoints as ckpt

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

METRICS = "metrics.json"


def build_progress(
    state: ckpt.TrainState, total: int, per_epoch: int, seconds_per_step: float
) -> Progress:
    eta = datetime.now(UTC) + timedelta(seconds=seconds_per_step * (total - state.step))
    return Progress(
        epoch=round(state.step / per_epoch, 3) if per_epoch else None,
        step=state.step,
        total_steps=total,
        train_loss=round(state.train_losses[-1][1], 6) if state.train_losses else None,
        eta=eta.replace(microsecond=0),
        tokens_per_second=_tokens_per_second(state),
    )


def build_metrics(state: ckpt.TrainState, per_epoch: int) -> dict[str, Any]:
    last_epoch = [loss for _, loss in state.train_losses[-per_epoch:]]
    metrics: dict[str, Any] = {
        "trainLoss": sum(last_epoch) / len(last_epoch) if last_epoch else None,
        "trainedTokens": state.trained_tokens,
        "seenTokens": state.seen_tokens,
        "trainSeconds": round(state.elapsed, 3),
        "tokensPerSecond": _tokens_per_second(state),
        "steps": state.step,
        "epochs": state.epoch,
        "resumedFrom": state.resumed_from,
        "trainLosses": state.train_losses,
        "evaluations": state.evaluations,
    }
    if state.evaluations:
        _, loss, accuracy = state.evaluations[-1]
        metrics["initialValidationLoss"] = state.evaluations[0][1]
        metrics["validationLoss"] = loss
        metrics["perplexity"] = math.exp(min(loss, 700.0))
        metrics["tokenAccuracy"] = accuracy
    return metrics


def _tokens_per_second(state: ckpt.TrainState) -> float | None:
    """Non-padding tokens per second of training steps, over the whole run (resumes included)."""
    return round(state.seen_tokens / state.elapsed, 1) if state.elapsed else None


def api_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The subset of metrics.json that is the API's Metrics."""
    keys = ("trainLoss", "validationLoss", "perplexity", "tokenAccuracy")
    return {k: metrics[k] for k in keys if metrics.get(k) is not None}


def write_result(
    output: Path,
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    metrics: dict[str, Any],
    *,
    merge: bool,
) -> None:
    """Adapter and tokenizer into `output`, then metrics.json, each file replaced atomically."""
    output.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-final-", dir=output))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(tmp)
        if merge:
            merged = tmp / "merged"
            model.merge_and_unload().save_pretrained(merged)
            tokenizer.save_pretrained(merged)
            shutil.rmtree(output / "merged", ignore_errors=True)
            os.replace(merged, output / "merged")
        ckpt.fsync_tree(tmp)
        for path in sorted(tmp.iterdir()):
            os.replace(path, output / path.name)
        (tmp / METRICS).write_text(json.dumps(metrics, indent=1))
        ckpt.fsync_tree(tmp)
        os.replace(tmp / METRICS, output / METRICS)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
