"""Concrete training settings from a FineTuneJobSpec: defaults and Foundry's multipliers.

Azure AI Foundry exposes `learningRateMultiplier` and `batchSizeMultiplier`
instead of absolute values. The local trainer maps them onto its own defaults
(docs/trainer.md has the table):

- learning rate = `learningRate`, else `DEFAULT_LEARNING_RATE` (2e-4, the usual
  LoRA rate) x `learningRateMultiplier` (default 1);
- batch size (examples per optimizer step and process) = `batchSize`, else
  `round(DEFAULT_BATCH_SIZE x batchSizeMultiplier)` (8 x, at least 1, at most 1024);
- that batch is split into `gradientAccumulationSteps` micro-batches (default 1;
  more than the batch size is capped to it), so accumulation trades speed for
  memory without changing the optimization;
- epochs 3, warm-up 3% of the steps then linear decay to 0, seed 42, validation
  split 0.1, gradient clipping at 1.0, no weight decay.

Pure: no torch, no files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kubetune.api.finetunejob import FineTuneJobSpec, Quantization

DEFAULT_LEARNING_RATE = 2e-4
DEFAULT_BATCH_SIZE = 8
DEFAULT_WARMUP_RATIO = 0.03
DEFAULT_SEED = 42
DEFAULT_VALIDATION_SPLIT = 0.1
MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class Plan:
    """What the training loop needs to know about the job, resolved."""

    epochs: int
    learning_rate: float
    batch_size: int
    """Examples per optimizer step and process."""
    accumulation: int
    """Micro-batches per optimizer step (each about batch_size / accumulation examples)."""
    warmup_ratio: float
    seed: int
    validation_split: float
    max_sequence_length: int | None
    """None: the model's context length."""
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: list[str] | None
    """None: the architecture's default (see modeling.default_target_modules)."""
    four_bit: bool

    def steps_per_epoch(self, examples: int, processes: int) -> int:
        """Optimizer steps in one epoch (a remainder smaller than `processes` is dropped)."""
        full, rest = divmod(examples, self.batch_size * processes)
        return full + (1 if rest >= processes else 0)

    def warmup_steps(self, total_steps: int) -> int:
        return math.ceil(total_steps * self.warmup_ratio)


def build_plan(spec: FineTuneJobSpec) -> Plan:
    """Resolves the job's hyper-parameters against the defaults above."""
    hp = spec.hyperparameters
    if hp.learning_rate is not None:
        learning_rate = hp.learning_rate
    else:
        learning_rate = DEFAULT_LEARNING_RATE * (hp.learning_rate_multiplier or 1.0)
    if hp.batch_size is not None:
        batch_size = hp.batch_size
    else:
        batch_size = round(DEFAULT_BATCH_SIZE * (hp.batch_size_multiplier or 1.0))
        batch_size = min(max(batch_size, 1), 1024)
    accumulation = min(hp.gradient_accumulation_steps or 1, batch_size)
    return Plan(
        epochs=hp.epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        accumulation=accumulation,
        warmup_ratio=DEFAULT_WARMUP_RATIO if hp.warmup_ratio is None else hp.warmup_ratio,
        seed=DEFAULT_SEED if hp.seed is None else hp.seed,
        validation_split=spec.dataset.validation_split or DEFAULT_VALIDATION_SPLIT,
        max_sequence_length=hp.max_sequence_length,
        lora_r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=spec.lora.target_modules,
        four_bit=spec.quantization == Quantization.FOUR_BIT,
    )


def learning_rate_factor(step: int, *, warmup: int, total: int) -> float:
    """Multiplier of the peak rate at `step` (0-based): linear warm-up, then linear decay to 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))
