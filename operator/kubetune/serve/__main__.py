"""`python -m kubetune.serve`: serve a base model plus a LoRA adapter over the OpenAI API.

The serving Deployment runs `python -m kubetune.serve --base-model=<dir or HF id>
--adapter=<dir> --model-name=<name> --port=8000`.
Clients ask for `--model-name` to get the fine-tuned model, or for `--base-model-name`
to get the base model alone (not when `--merge` folded the adapter into it).

The model is loaded before the port opens, so the readiness probe (`GET /v1/models`)
passes only once requests can be answered. Exit codes: 0 after SIGTERM/SIGINT,
1 when the model cannot be loaded, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from aiohttp import web

from kubetune.serve.server import ServedModels, build_app

logger = logging.getLogger("kubetune.serve")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kubetune.serve",
        description="OpenAI-compatible chat completions for a base model plus a LoRA adapter.",
    )
    p.add_argument("--base-model", required=True, help="model directory or Hugging Face id")
    p.add_argument("--adapter", type=Path, help="LoRA adapter directory (peft format)")
    p.add_argument("--model-name", help="id clients use for the fine-tuned model")
    p.add_argument("--base-model-name", help="id clients use for the base model alone")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--merge", action="store_true", help="merge the adapter into the weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="auto: bfloat16 (or float16) on GPUs, float32 on the CPU",
    )
    p.add_argument("--threads", type=int, help="CPU threads (default: the container's limit)")
    p.add_argument("--context-length", type=int, help="override the model's context length")
    p.add_argument(
        "--default-max-tokens",
        type=int,
        default=512,
        help="completion length when a request gives no max_tokens",
    )
    p.add_argument(
        "--allow-download",
        action="store_true",
        help="let transformers download from the Hugging Face Hub (default: offline)",
    )
    p.add_argument("--log-level", default="INFO")
    return p


def default_base_name(base_model: str) -> str:
    """A directory is named by its last component; a Hub id stays as it is."""
    path = Path(base_model)
    return path.resolve().name if path.is_dir() else base_model


def served_models(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ServedModels:
    base_name = args.base_model_name or default_base_name(args.base_model)
    if args.adapter is None:
        return ServedModels({args.model_name or base_name: False}, created=int(time.time()))
    model_name = args.model_name or args.adapter.resolve().name
    if args.merge:
        return ServedModels({model_name: True}, created=int(time.time()))
    if model_name == base_name:
        parser.error(f"--model-name and --base-model-name are both {model_name!r}")
    return ServedModels({model_name: True, base_name: False}, created=int(time.time()))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag, value, least in (
        ("--threads", args.threads, 1),
        ("--context-length", args.context_length, 2),
        ("--default-max-tokens", args.default_max_tokens, 1),
    ):
        if value is not None and value < least:
            parser.error(f"{flag} must be at least {least}")
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    models = served_models(args, parser)

    # Imported here: torch and transformers take seconds, and `--help` should not.
    import torch

    from kubetune.serve.loading import load_engine
    from kubetune.serve.transformers_engine import LoadError, cgroup_cpu_limit

    threads = args.threads or cgroup_cpu_limit()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        engine = load_engine(
            args.base_model,
            args.adapter,
            merge=args.merge,
            device=args.device,
            dtype=args.dtype,
            allow_download=args.allow_download,
            context_length=args.context_length,
            default_max_tokens=args.default_max_tokens,
        )
    except LoadError as e:
        print(f"kubetune.serve: error: {e}", file=sys.stderr)
        return 1
    logger.info(
        "serving host=%s port=%d models=%s threads=%d",
        args.host,
        args.port,
        ",".join(models.adapter_by_id),
        torch.get_num_threads(),
    )
    web.run_app(
        build_app(engine, models), host=args.host, port=args.port, access_log=None, print=None
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
