"""`python -m kubetune.trainer --config FILE [--nproc-per-node N]`: the training pod's entrypoint.

The same command runs in three roles:

1. launcher (no `LOCAL_RANK` in the environment): parse the TrainerConfig,
   fetch url data sources, validate and tokenize the data (exit 65 with every
   problem on stderr and in the termination log), check that the job can run
   here (exit 78), then either train in this process (N = 1) or replace itself
   with `torchrun --standalone --nproc-per-node N -m kubetune.trainer ...`;
2. worker under torchrun (`LOCAL_RANK` set): join the process group (nccl on
   GPUs, gloo on the CPU) and train its share of each batch;
3. single process: roles 1 and 2 at once.

Failures the job itself causes are found in the launcher, before torchrun,
because torchrun reports any worker failure as exit 1 and so would hide the
"do not retry" codes. See trainer/errors.py for the exit codes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pydantic import ValidationError

from kubetune.api.trainerconfig import TrainerConfig
from kubetune.trainer.errors import BadInput, Stopped, TrainerError, Unsupported
from kubetune.trainer.progress import DEFAULT_INTERVAL

if TYPE_CHECKING:
    from kubetune.trainer.loop import World
    from kubetune.trainer.run import Options, Prepared

log = logging.getLogger("kubetune.trainer")

TERMINATION_LOG = "/dev/termination-log"
TERMINATION_LOG_BYTES = 4096  # the kubelet keeps at most 4 KiB


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kubetune.trainer", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", required=True, type=Path, help="TrainerConfig JSON file")
    parser.add_argument(
        "--nproc-per-node",
        type=int,
        default=None,
        help="data-parallel processes (one per GPU); default: the config's `processes`",
    )
    parser.add_argument(
        "--save-steps",
        type=int,
        default=None,
        help="checkpoint every N optimizer steps (default: about 10 per run; always each epoch)",
    )
    parser.add_argument(
        "--report-interval",
        type=float,
        default=DEFAULT_INTERVAL,
        help=f"seconds between progress reports ({DEFAULT_INTERVAL:g})",
    )
    parser.add_argument("--merge", action="store_true", help="also write the merged model")
    parser.add_argument("--termination-log", default=TERMINATION_LOG, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Never download: a missing model is an error, not a silent multi-GB fetch.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    worker = "LOCAL_RANK" in os.environ
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s %(levelname)s rank={rank} %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = _load_config(args.config)
        processes = config.processes if args.nproc_per_node is None else args.nproc_per_node
        if processes < 1:
            raise Unsupported(f"--nproc-per-node must be at least 1, got {processes}")
        if worker:
            return _train(config, args, processes)
        from kubetune.trainer.modeling import check_environment
        from kubetune.trainer.run import completed_metrics, prepare

        if completed_metrics(config, _options(args)) is not None:
            return 0  # a restart after success: nothing to do
        config = _fetched(config)

        prepared = prepare(config, processes)
        check_environment(prepared.plan, processes)
        if processes == 1:
            return _train(config, args, 1, prepared)
        _exec_torchrun(config, args, processes)
    except TrainerError as e:
        lines = e.problems if isinstance(e, BadInput) else []
        message = "\n".join([str(e), *lines])
        print(message, file=sys.stderr)
        if rank == 0:
            _terminate_message(args.termination_log, message)
        return e.exit_code
    except Stopped as e:
        log.warning("stopped after a checkpoint")
        return e.exit_code


def _train(
    config: TrainerConfig,
    args: argparse.Namespace,
    processes: int,
    prepared: Prepared | None = None,
) -> int:
    from transformers.utils import logging as hf_logging

    from kubetune.trainer.run import prepare, run_training

    # One progress bar per weight load is noise in pod logs.
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    world = _init_world(processes)
    try:
        if prepared is None:
            prepared = prepare(config, world.size)
        run_training(config, _options(args), world, prepared)
        return 0
    finally:
        if world.size > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _options(args: argparse.Namespace) -> Options:
    from kubetune.trainer.run import Options

    return Options(
        save_steps=args.save_steps, report_interval=args.report_interval, merge=args.merge
    )


def _init_world(processes: int) -> World:
    from kubetune.trainer.loop import World

    if "LOCAL_RANK" not in os.environ:
        return World()
    import torch
    import torch.distributed as dist

    size = int(os.environ["WORLD_SIZE"])
    if size != processes:
        raise Unsupported(f"torchrun started {size} processes, the config asks for {processes}")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return World(rank=dist.get_rank(), local_rank=local_rank, size=size)


def _exec_torchrun(config: TrainerConfig, args: argparse.Namespace, processes: int) -> NoReturn:
    """Replaces this process with torchrun; the workers re-read the (fetched) config."""
    handle, name = tempfile.mkstemp(prefix="kubetune-config-", suffix=".json")
    with os.fdopen(handle, "w") as f:
        f.write(config.model_dump_json(by_alias=True))
    env = dict(os.environ)
    # Without this torchrun sets 1 thread per worker; on the CPU, share the cores.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "kubetune.trainer",
        "--config",
        name,
        f"--nproc-per-node={processes}",
        f"--report-interval={args.report_interval}",
        f"--termination-log={args.termination_log}",
    ]
    if args.save_steps is not None:
        command.append(f"--save-steps={args.save_steps}")
    if args.merge:
        command.append("--merge")
    log.info("starting %d data-parallel processes", processes)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, env)


def _load_config(path: Path) -> TrainerConfig:
    try:
        return TrainerConfig.model_validate_json(path.read_bytes())
    except OSError as e:
        raise Unsupported(f"cannot read the config {path}: {e}") from e
    except ValidationError as e:
        raise Unsupported(f"invalid config {path}: {e}") from e


def _fetched(config: TrainerConfig) -> TrainerConfig:
    from kubetune.trainer.sources import fetch_sources

    return fetch_sources(config, Path(tempfile.gettempdir()) / "kubetune-data")


def _terminate_message(path: str, message: str) -> None:
    """Writes the reason where Kubernetes shows it (status.containerStatuses[].state)."""
    data = message.encode()[:TERMINATION_LOG_BYTES]
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError:
        pass  # not in a pod, or not writable: stderr has it anyway


if __name__ == "__main__":
    sys.exit(main())
