"""The `kubetune` command line.

    kubetune crds [--root DIR] [--check]         write (or check) the generated CRDs
    kubetune run [options]                       run the operator
    kubetune dev up|status|down                  a local control plane with the operator
    kubetune validate-data FILE [--validation FILE] [--model M --max-tokens N] [--json]
                                                 check chat-completion JSONL (Foundry's rules)

Subcommands import what they need when they run, so `kubetune crds` works
without the operator's runtime and `kubetune dev` without a cluster.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from kubetune.api.common import FoundryWorkspace
from kubetune.settings import FoundrySettings, LocalSettings


def _crds(args: argparse.Namespace) -> int:
    from kubetune.api.generated import stale_files, write_files

    root = Path(args.root)
    if args.check:
        stale = stale_files(root)
        for name in stale:
            print(f"{root / name} is out of date: run `kubetune crds`", file=sys.stderr)
        return 1 if stale else 0
    for path in write_files(root):
        print(f"wrote {path}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from kubetune.handlers.operator import run
    from kubetune.settings import LocalSettings, LogFormat, RunOptions

    run(
        RunOptions(
            local=LocalSettings(
                trainer_image=args.trainer_image,
                vllm_image=args.vllm_image,
                gpu_resource=args.gpu_resource,
                progress_url=args.progress_url,
                default_output_pvc=args.default_output_pvc,
                reference_timeout=args.reference_timeout,
            ),
            foundry=FoundrySettings(
                poll_interval=args.foundry_poll_interval,
                max_poll_interval=max(args.foundry_poll_interval, args.foundry_max_poll_interval),
                endpoint_check_interval=args.foundry_endpoint_check_interval,
                workspace=_default_workspace(args),
            ),
            namespaces=tuple(args.namespace),
            http_host=args.http_host,
            http_port=args.http_port,
            peering=args.peering,
            priority=args.priority,
            workers=args.workers,
            log_format=LogFormat(args.log_format),
            verbose=args.verbose,
        )
    )
    return 0


def _dev(args: argparse.Namespace) -> int:
    from kubetune import dev

    actions = {"up": dev.up, "status": dev.status, "down": dev.down}
    return actions[args.action]()


def _validate_data(args: argparse.Namespace) -> int:
    import json

    from kubetune import datavalidation as dv

    if (args.model is None) != (args.max_tokens is None):
        print("kubetune validate-data: --model and --max-tokens go together", file=sys.stderr)
        return 2
    if args.max_tokens is not None and args.max_tokens < 1:
        print("kubetune validate-data: --max-tokens must be at least 1", file=sys.stderr)
        return 2
    # The validation file needs only 1 example: Foundry's minimum of 10 is for training.
    files = {"training": (args.file, dv.MIN_EXAMPLES)}
    if args.validation is not None:
        files["validation"] = (args.validation, 1)
    try:
        count_tokens = None if args.model is None else dv.load_token_counter(args.model)
        reports = {
            kind: dv.validate_chat_jsonl(
                Path(path),
                min_examples=minimum,
                count_tokens=count_tokens,
                max_tokens=args.max_tokens,
            )
            for kind, (path, minimum) in files.items()
        }
    except (OSError, dv.TokenizerUnavailable) as e:
        print(f"kubetune validate-data: {e}", file=sys.stderr)
        return 2
    ok = all(report.ok for report in reports.values())
    if args.json:
        out: dict[str, object] = {"ok": ok}
        for kind, report in reports.items():
            out[kind] = {"path": files[kind][0], **report.as_dict()}
        print(json.dumps(out, indent=2))
    else:
        for kind, report in reports.items():
            path = files[kind][0]
            for p in report.problems:
                print(f"{path}: {p.reason}" if p.line is None else f"{path}:{p.line}: {p.reason}")
            verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
            print(f"{path}: {kind}, {report.examples} example(s), {verdict}")
    return 0 if ok else dv.BAD_INPUT_EXIT_CODE


def _default_workspace(args: argparse.Namespace) -> FoundryWorkspace | None:
    parts = (args.foundry_subscription_id, args.foundry_resource_group, args.foundry_workspace)
    if not any(parts):
        return None
    if not all(parts):
        raise SystemExit(
            "kubetune run: --foundry-subscription-id, --foundry-resource-group and "
            "--foundry-workspace go together"
        )
    return FoundryWorkspace(subscription_id=parts[0], resource_group=parts[1], name=parts[2])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubetune", description="Fine-tune language models from Kubernetes resources."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    crds = sub.add_parser("crds", help="write the CRDs generated from the resource models")
    crds.add_argument(
        "--root",
        default=".",
        help="repository root: writes crds/*.yaml and the Helm chart's templates/crds.yaml",
    )
    crds.add_argument(
        "--check", action="store_true", help="exit 1 when the files differ from the models"
    )
    crds.set_defaults(func=_crds)

    run = sub.add_parser("run", help="run the operator against the current kubeconfig")
    run.add_argument(
        "--namespace",
        action="append",
        default=[n for n in os.environ.get("KUBETUNE_NAMESPACES", "").split(",") if n],
        help="namespace to watch (repeatable; default: all namespaces)",
    )
    run.add_argument("--http-host", default=os.environ.get("KUBETUNE_HTTP_HOST", "0.0.0.0"))
    run.add_argument(
        "--http-port",
        type=int,
        default=int(os.environ.get("KUBETUNE_HTTP_PORT", "8080")),
        help="port of /healthz and /metrics (8080)",
    )
    run.add_argument(
        "--peering",
        default=os.environ.get("KUBETUNE_PEERING") or None,
        help="Kopf peering name, for several replicas (default: standalone)",
    )
    run.add_argument(
        "--priority",
        type=int,
        # Distinct per process, so that replicas never tie (tied Kopf peers all pause).
        default=int(os.environ.get("KUBETUNE_PRIORITY", "0")) or secrets.randbelow(1_000_000) + 1,
        help="peering priority; the highest acts, the others stand by (default: random)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("KUBETUNE_WORKERS", "50")),
        help="objects of one kind handled at once, and jobs synced from their training pods "
        "at once; bounds memory in a burst (default: 50)",
    )
    run.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=os.environ.get("KUBETUNE_LOG_FORMAT", "text"),
    )
    run.add_argument("--verbose", action="store_true")
    defaults = LocalSettings()
    run.add_argument(
        "--trainer-image",
        default=os.environ.get("KUBETUNE_TRAINER_IMAGE", defaults.trainer_image),
        help="image of training pods and of the kubetune serving runtime",
    )
    run.add_argument(
        "--vllm-image", default=os.environ.get("KUBETUNE_VLLM_IMAGE", defaults.vllm_image)
    )
    run.add_argument(
        "--gpu-resource",
        default=os.environ.get("KUBETUNE_GPU_RESOURCE", defaults.gpu_resource),
        help="extended resource name of a GPU (nvidia.com/gpu)",
    )
    run.add_argument(
        "--progress-url",
        default=os.environ.get("KUBETUNE_PROGRESS_URL", defaults.progress_url),
        help="URL at which training pods reach this operator's HTTP port",
    )
    run.add_argument(
        "--default-output-pvc",
        default=os.environ.get("KUBETUNE_DEFAULT_OUTPUT_PVC") or None,
        help="PVC for adapters of jobs without spec.output",
    )
    run.add_argument(
        "--reference-timeout",
        type=float,
        default=float(
            os.environ.get("KUBETUNE_REFERENCE_TIMEOUT", str(defaults.reference_timeout))
        ),
        help="seconds a job waits for a missing dataset ConfigMap before it fails (300)",
    )
    foundry = FoundrySettings()
    run.add_argument(
        "--foundry-poll-interval",
        type=float,
        default=float(os.environ.get("KUBETUNE_FOUNDRY_POLL_INTERVAL", str(foundry.poll_interval))),
        help="seconds between polls of an Azure job or endpoint at first (30)",
    )
    run.add_argument(
        "--foundry-max-poll-interval",
        type=float,
        default=float(
            os.environ.get("KUBETUNE_FOUNDRY_MAX_POLL_INTERVAL", str(foundry.max_poll_interval))
        ),
        help="polls back off while nothing changes, up to this many seconds (300)",
    )
    run.add_argument(
        "--foundry-endpoint-check-interval",
        type=float,
        default=float(
            os.environ.get(
                "KUBETUNE_FOUNDRY_ENDPOINT_CHECK_INTERVAL", str(foundry.endpoint_check_interval)
            )
        ),
        help="seconds between checks that a Ready serverless endpoint still exists (600)",
    )
    for flag, what in (
        ("subscription-id", "subscription"),
        ("resource-group", "resource group"),
        ("workspace", "workspace (Foundry project)"),
    ):
        env = "KUBETUNE_FOUNDRY_" + flag.upper().replace("-", "_")
        run.add_argument(
            f"--foundry-{flag}",
            default=os.environ.get(env) or None,
            help=f"Azure {what} of foundry jobs without spec.workspace",
        )
    run.set_defaults(func=_run)

    dev = sub.add_parser("dev", help="a local control plane with the operator and the examples")
    dev.add_argument("action", choices=["up", "status", "down"])
    dev.set_defaults(func=_dev)

    data = sub.add_parser(
        "validate-data",
        help="check chat-completion JSONL against Azure AI Foundry's rules",
        description=(
            "Reports every problem as FILE:LINE: reason. Exit status: 0 when the data is "
            "valid, 65 when it is not, 2 for usage errors."
        ),
    )
    data.add_argument("file", help="training JSONL (at least 10 examples)")
    data.add_argument("--validation", help="validation JSONL (at least 1 example)")
    data.add_argument(
        "--model",
        help="local model directory or cached Hugging Face id whose tokenizer and chat "
        "template count tokens (needs transformers; never downloads)",
    )
    data.add_argument("--max-tokens", type=int, help="longest example allowed, in tokens")
    data.add_argument("--json", action="store_true", help="print a JSON object instead")
    data.set_defaults(func=_validate_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
