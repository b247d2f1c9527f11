"""Loading the base model, the LoRA adapter and the tokenizer for serving.

Every failure a user can cause (a wrong path, an id not in the local cache, a
directory that is not an adapter, a tokenizer without a chat template) becomes a
`LoadError` with a one-line reason, which `__main__` prints before exiting non-zero.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as transformers_logging

from kubetune.serve.transformers_engine import (
    UNKNOWN_LENGTH,
    Dtype,
    LoadError,
    TransformersEngine,
    pick_device,
    pick_dtype,
)

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
MAX_REASON = 500


def load_engine(
    base_model: str,
    adapter: Path | None,
    *,
    merge: bool = False,
    device: str = "auto",
    dtype: Dtype = "auto",
    allow_download: bool = False,
    context_length: int | None = None,
    default_max_tokens: int = 512,
) -> TransformersEngine:
    """The engine for `base_model` (a directory or a Hugging Face id) plus `adapter`."""
    if base_model.startswith(("/", "./", "../")) and not Path(base_model).is_dir():
        raise LoadError(f"base model directory {base_model} does not exist")
    if adapter is not None and not (adapter / ADAPTER_CONFIG).is_file():
        raise LoadError(f"{adapter} is not a LoRA adapter directory (no {ADAPTER_CONFIG})")
    # The tokenizer the trainer saved next to the adapter is the one it trained with.
    tokenizer_source = (
        str(adapter)
        if adapter is not None and (adapter / TOKENIZER_CONFIG).is_file()
        else base_model
    )
    where = pick_device(device)
    offline = not allow_download
    # Progress bars are noise in a pod's log.
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    with _reason("tokenizer", tokenizer_source, offline):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, local_files_only=offline)
    with _reason("base model", base_model, offline):
        base: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
            base_model,
            dtype=pick_dtype(dtype, where),
            device_map=str(where),
            local_files_only=offline,
        )
    model: PreTrainedModel | PeftModel = base
    if adapter is not None:
        with _reason("adapter", str(adapter), offline):
            model = _with_adapter(base, adapter, merge=merge)
    if not getattr(tokenizer, "chat_template", None):
        raise LoadError(f"the tokenizer of {tokenizer_source!r} has no chat template")
    model.eval()
    length = context_length or _context_length(model, tokenizer.model_max_length)
    logger.info(
        "loaded base_model=%s adapter=%s merged=%s device=%s dtype=%s context_length=%d",
        base_model,
        adapter,
        merge and adapter is not None,
        where,
        model.dtype,
        length,
    )
    return TransformersEngine(
        model, tokenizer, context_length=length, default_max_tokens=default_max_tokens
    )


@contextlib.contextmanager
def _reason(what: str, source: str, offline: bool) -> Iterator[None]:
    """Turns a loading failure into a one-line `LoadError`. transformers raises OSError
    for missing files and ids not in the cache, peft ValueError for target modules the
    model lacks, torch RuntimeError for weights whose shapes do not fit."""
    try:
        yield
    except (OSError, ValueError, RuntimeError) as e:
        offline_hint = " (offline: only local directories and the Hugging Face cache)"
        hint = offline_hint if offline and isinstance(e, OSError) else ""
        reason = " ".join(str(e).split()) or type(e).__name__  # one line, however long
        if len(reason) > MAX_REASON:
            reason = reason[: MAX_REASON - 1] + "…"
        raise LoadError(f"cannot load the {what} {source!r}{hint}: {reason}") from None


def _with_adapter(
    model: PreTrainedModel, adapter: Path, *, merge: bool
) -> PreTrainedModel | PeftModel:
    with warnings.catch_warnings():
        # peft 0.21 asks transformers 5 a deprecated question while wrapping the model.
        warnings.filterwarnings(
            "ignore", "`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        peft_model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    if merge:
        merged = peft_model.merge_and_unload()
        assert isinstance(merged, PreTrainedModel)
        return merged
    return peft_model


def _context_length(model: PreTrainedModel | PeftModel, tokenizer_limit: int) -> int:
    positions = getattr(model.config, "max_position_embeddings", None)
    limits = [n for n in (positions, tokenizer_limit) if isinstance(n, int) and n < UNKNOWN_LENGTH]
    if not limits:
        raise LoadError("cannot tell the model's context length; pass --context-length")
    return min(limits)
