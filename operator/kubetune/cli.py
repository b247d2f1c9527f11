"""The `kubetune` command line.

    kubetune crds [--output-dir DIR] [--check]   write (or check) the generated CRDs
    kubetune run [options]                       run the operator
    kubetune dev up|status|down                  a local control plane with the operator

Subcommands import what they need when they run, so `kubetune crds` works
without the operator's runtime and `kubetune dev` without a cluster.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _crds(args: argparse.Namespace) -> int:
    from kubetune.api.crdgen import stale_crds, write_crds

    directory = Path(args.output_dir)
    if args.check:
        stale = stale_crds(directory)
        for name in stale:
            print(f"{directory / name} is out of date: run `kubetune crds`", file=sys.stderr)
        return 1 if stale else 0
    for path in write_crds(directory):
        print(f"wrote {path}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from kubetune.handlers.operator import run
    from kubetune.settings import LogFormat, RunOptions

    run(
        RunOptions(
            namespaces=tuple(args.namespace),
            http_host=args.http_host,
            http_port=args.http_port,
            peering=args.peering,
            log_format=LogFormat(args.log_format),
            verbose=args.verbose,
        )
    )
    return 0


def _dev(args: argparse.Namespace) -> int:
    from kubetune import dev

    actions = {"up": dev.up, "status": dev.status, "down": dev.down}
    return actions[args.action]()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubetune", description="Fine-tune language models from Kubernetes resources."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    crds = sub.add_parser("crds", help="write the CRDs generated from the resource models")
    crds.add_argument("--output-dir", default="crds", help="directory of the CRD files (crds)")
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
        "--log-format",
        choices=["text", "json"],
        default=os.environ.get("KUBETUNE_LOG_FORMAT", "text"),
    )
    run.add_argument("--verbose", action="store_true")
    run.set_defaults(func=_run)

    dev = sub.add_parser("dev", help="a local control plane with the operator and the examples")
    dev.add_argument("action", choices=["up", "status", "down"])
    dev.set_defaults(func=_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
