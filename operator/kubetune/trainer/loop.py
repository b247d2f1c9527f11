"""The optimization mechanics: assistant-token loss, one optimizer step, evaluation.

`TokenLoss` runs the decoder, then the output projection only on the positions
that carry loss (assistant tokens), and returns the summed cross-entropy: the
full (batch x length x vocabulary) logits are never built, which saves memory
on large vocabularies and time on short answers. Models that post-process
logits (soft-capping, a logit scale) take the full forward path instead.

`train_step` normalizes by the number of target tokens in the whole optimizer
step, over every micro-batch and every process, so gradient accumulation and
data parallelism give the same update as one big batch. With several
processes, `TokenLoss` is wrapped in DistributedDataParallel, gradients are
all-reduced once per step (`no_sync` on the other micro-batches), and a
stop flag (SIGTERM) is agreed on at the start of each step so that all
processes checkpoint the same step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
import torch.distributed as dist
import torch.nn.functional as F

from kubetune.trainer.data import IGNORE, Example, collate, collate_flat
from kubetune.trainer.modeling import Runtime
from kubetune.trainer.plan import MAX_GRAD_NORM

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel processes."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class TokenLoss(torch.nn.Module):
    """(summed cross-entropy, correct argmax predictions) over the target tokens of a batch."""

    def __init__(self, model: PeftModel) -> None:
        super().__init__()
        self.model = model
        lm = cast("PreTrainedModel", model.get_base_model())
        # A tuple, not attributes: they are submodules of `model` already.
        self._parts: tuple[torch.nn.Module, torch.nn.Module] = (
            lm.get_decoder(),  # type: ignore[no-untyped-call]
            lm.get_output_embeddings(),  # type: ignore[no-untyped-call]
        )
        config = lm.config
        self.full_logits = bool(
            getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None)
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        selected = targets != IGNORE
        wanted = targets[selected]
        if self.full_logits:
            out = self.model.get_base_model()(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=False,
            )
            logits = out.logits[selected]
        else:
            # use_cache=False: with a cache, packed rows would attend across examples.
            decoder, head = self._parts
            hidden = decoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=False,
            ).last_hidden_state
            logits = head(hidden[selected])
        logits = logits.float()
        loss = F.cross_entropy(logits, wanted, reduction="sum")
        if self.training:
            return loss, torch.zeros((), device=loss.device)
        correct = (logits.argmax(dim=-1) == wanted).sum()
        return loss, correct


class CpuDropout(torch.nn.Dropout):
    """Inverted dropout whose mask takes 16 random bits per element instead of 32.

    The CPU generator (mt19937) runs on one thread and `nn.Dropout` draws a
    32-bit number per element: on a small model, LoRA's dropout on every
    adapter's input took a quarter of the training step. Here one 64-bit draw
    gives four 16-bit uniform numbers, compared with p rounded to 1/65536
    (0.05 becomes 0.0500031): the same distribution, about 3x faster. CUDA's
    own dropout is a fused kernel already, so only the CPU uses this.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        count = x.numel()
        bits = torch.empty((count + 3) // 4, dtype=torch.int64, device=x.device)
        bits.random_(-(2**63), None)  # the whole 64-bit range
        threshold = round(self.p * 65536) - 32768
        dropped = bits.view(torch.int16)[:count].view(x.shape) < threshold
        return x.masked_fill(dropped, 0.0).mul_(1 / (1 - self.p))


def use_cpu_dropout(model: torch.nn.Module) -> int:
    """Replaces the model's `nn.Dropout` modules with `CpuDropout`; returns how many."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is torch.nn.Dropout and child.p > 0:
                setattr(module, name, CpuDropout(child.p))
                replaced += 1
    return replaced


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def build_micro_batches(
    examples: Sequence[Example], accumulation: int, *, pad_id: int, padding_free: bool
) -> list[dict[str, torch.Tensor]]:
    """Splits one process's share of a step into at most `accumulation` micro-batches."""
    parts = min(accumulation, len(examples))
    size, extra = divmod(len(examples), parts)
    out: list[dict[str, torch.Tensor]] = []
    start = 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        chunk = examples[start:end]
        out.append(collate_flat(chunk) if padding_free else collate(chunk, pad_id))
        start = end
    return out


def all_reduce(values: Sequence[float], world: World, device: torch.device) -> list[float]:
    """Sums numbers across processes (returns them unchanged with one process)."""
    if world.size == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.tolist()]


def train_step(
    module: torch.nn.Module,
    parameters: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    micro_batches: Sequence[dict[str, torch.Tensor]],
    *,
    step_tokens: int,
    world: World,
    runtime: Runtime,
) -> float:
    """One optimizer step; returns this process's summed loss (divide by `step_tokens`)."""
    loss_sum = 0.0
    last = len(micro_batches) - 1
    for i, batch in enumerate(micro_batches):
        sync = (
            module.no_sync()  # type: ignore[operator]
            if world.size > 1 and i < last
            else contextlib.nullcontext()
        )
        with sync, _autocast(runtime):
            loss, _ = module(**to_device(batch, runtime.device))
            # DDP averages gradients over processes: scale back up to a global token mean.
            (loss * (world.size / step_tokens)).backward()
        loss_sum += float(loss.detach())
    torch.nn.utils.clip_grad_norm_(parameters, MAX_GRAD_NORM)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum


@torch.no_grad()
def evaluate(
    loss_module: TokenLoss,
    examples: Sequence[Example],
    *,
    batch_size: int,
    pad_id: int,
    world: World,
    runtime: Runtime,
) -> tuple[float, float]:
    """(mean loss, token accuracy) on assistant tokens, this process taking its share."""
    mine = list(examples)[world.rank :: world.size]
    mine.sort(key=lambda e: -len(e.input_ids))
    was_training = loss_module.training
    loss_module.eval()
    total = correct = 0.0
    try:
        for start in range(0, len(mine), batch_size):
            chunk = mine[start : start + batch_size]
            batch = collate_flat(chunk) if runtime.padding_free else collate(chunk, pad_id)
            with _autocast(runtime):
                loss, right = loss_module(**to_device(batch, runtime.device))
            total += float(loss)
            correct += float(right)
    finally:
        loss_module.train(was_training)
    count = sum(e.trained_tokens for e in mine)
    total, correct, count_all = all_reduce([total, correct, float(count)], world, runtime.device)
    if not count_all:
        return math.nan, math.nan
    return total / count_all, correct / count_all


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one step: dropout masks depend on (seed, step, rank) only,
    so a resumed run draws the same masks as an uninterrupted one."""
    return (seed * 1_000_003 + step * 7919 + rank) % (2**63)


def _autocast(runtime: Runtime) -> contextlib.AbstractContextManager[object]:
    if runtime.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=runtime.device.type, dtype=runtime.autocast_dtype)
