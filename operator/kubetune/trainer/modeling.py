"""The base model, its tokenizer and the LoRA adapter, loaded without downloading.

- `model_source` says where the base model is: the mounted directory
  (`TrainerConfig.base_model_path`) or the Hugging Face id, which must already
  be in the local cache (`HF_HOME`; the trainer sets `HF_HUB_OFFLINE=1`).
- `check_environment` fails early (`Unsupported`, exit 78) on what cannot work
  here: QLoRA without a CUDA GPU and bitsandbytes, more processes than GPUs.
- `load_tokenizer` / `load_model`: a fast tokenizer with a chat template (the
  assistant-only loss needs its offsets); the model in bf16 on GPUs that support
  it (fp32 otherwise, and always on the CPU), 4-bit NF4 with double quantization
  for QLoRA, flash-attention 2 when installed on a GPU (then batches are
  padding-free), sdpa otherwise; LoRA on the architecture's attention and MLP
  projections unless the job names its own targets; or, for a job that continues
  from a FineTunedModel (`TrainerConfig.adapter_path`), that saved adapter, trainable.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kubetune.api.trainerconfig import TrainerConfig
from kubetune.trainer.errors import Unsupported
from kubetune.trainer.plan import Plan

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

TARGET_MODULES = {
    # Phi-3 fuses q/k/v and gate/up into single projections.
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
"""LoRA targets per `config.model_type`; other architectures get PEFT's "all-linear"."""


@dataclass(frozen=True)
class Runtime:
    """Where and how the model runs in this process."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    """bf16 on GPUs that support it; None: plain fp32."""
    padding_free: bool
    """Concatenate each micro-batch into one row (varlen attention); padded batches otherwise."""


def model_source(config: TrainerConfig) -> str:
    """The directory or cached Hugging Face id to load the base model from."""
    if config.base_model_path:
        return config.base_model_path
    base = config.base_model_id or config.spec.base_model
    if "://" in base:
        raise Unsupported(
            f"base model {base} must be mounted by the operator (the config has no baseModelPath)"
        )
    return base


def check_environment(plan: Plan, processes: int) -> None:
    """Raises Unsupported for what this machine cannot run; imports torch."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if plan.four_bit:
        if not gpus:
            raise Unsupported("quantization 4bit (QLoRA) needs a CUDA GPU; this pod has none")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise Unsupported(
                "quantization 4bit (QLoRA) needs bitsandbytes, which is not installed in the image"
            )
    if gpus and processes > gpus:
        raise Unsupported(f"{processes} processes requested but only {gpus} GPU(s) are visible")


def build_runtime(local_rank: int) -> Runtime:
    import torch

    if not torch.cuda.is_available():
        return Runtime(torch.device("cpu"), None, padding_free=False)
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    bf16 = torch.cuda.is_bf16_supported()
    flash = importlib.util.find_spec("flash_attn") is not None
    return Runtime(device, torch.bfloat16 if bf16 else None, padding_free=flash)


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, from disk or the local cache only."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as e:
        raise Unsupported(_missing(source, e)) from e
    if not tokenizer.is_fast:
        raise Unsupported(f"the tokenizer of {source} is not a fast tokenizer (offsets needed)")
    if not tokenizer.chat_template:
        raise Unsupported(f"the tokenizer of {source} has no chat template")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(source: str, plan: Plan, runtime: Runtime, adapter: str | None = None) -> PeftModel:
    """The base model with a trainable LoRA adapter, on `runtime.device`: a fresh one, or
    the saved `adapter` directory to train further (its own LoRA settings then apply)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, object] = {
        "local_files_only": True,
        "dtype": runtime.autocast_dtype or torch.float32,
        "attn_implementation": "flash_attention_2" if runtime.padding_free else "sdpa",
    }
    if plan.four_bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=runtime.autocast_dtype or torch.float16,
        )
        kwargs["device_map"] = {"": runtime.device}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        raise Unsupported(_missing(source, e)) from e
    if not plan.four_bit:
        torch.nn.Module.to(model, runtime.device)
    model.config.use_cache = False
    if plan.four_bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    if adapter is not None:
        return _continue_adapter(model, adapter)
    targets = plan.target_modules or default_target_modules(model.config.model_type)
    lora = LoraConfig(
        r=plan.lora_r,
        lora_alpha=plan.lora_alpha,
        lora_dropout=plan.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    # The adapter's initialisation is part of what the seed fixes.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(plan.seed)
        # peft 0.21 still calls transformers 5's deprecated is_gradient_checkpointing.
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        try:
            peft_model = get_peft_model(model, lora)
        except ValueError as e:  # e.g. a target module the model does not have
            raise Unsupported(f"LoRA cannot be applied: {e}") from e
    trainable, total = peft_model.get_nb_trainable_parameters()
    log.info("lora targets=%s trainable=%d total=%d", targets, trainable, total)
    return peft_model


def _continue_adapter(model: torch.nn.Module, adapter: str) -> PeftModel:
    """`model` with the saved LoRA adapter in `adapter`, trainable (model://... jobs)."""
    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        try:
            peft_model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        except (OSError, ValueError) as e:
            raise Unsupported(f"cannot continue from the adapter in {adapter}: {e}") from e
    trainable, total = peft_model.get_nb_trainable_parameters()
    log.info("continuing adapter=%s trainable=%d total=%d", adapter, trainable, total)
    return peft_model


def default_target_modules(model_type: str) -> list[str] | str:
    return TARGET_MODULES.get(model_type, "all-linear")


def _missing(source: str, error: Exception) -> str:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return (
        f"base model {source} is not available locally (downloads are off: mount it from a "
        f"PVC or pre-fill the Hugging Face cache): {reason}"
    )
