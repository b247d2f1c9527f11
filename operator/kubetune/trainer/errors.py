"""Why the trainer stops early, and the exit code each reason maps to.

```
TrainerError
├─ BadInput(problems)   -> 65 BAD_INPUT_EXIT_CODE (sysexits EX_DATAERR): the data is invalid
└─ Unsupported(message) -> 78 UNSUPPORTED_EXIT_CODE (sysexits EX_CONFIG): the job cannot run
                           as configured here (QLoRA without a CUDA GPU or bitsandbytes, a
                           base model that is not available locally, more processes than
                           GPUs, an unreadable config file, a data source this trainer
                           cannot fetch)
Stopped                 -> 143 STOPPED_EXIT_CODE (128 + SIGTERM): asked to stop; the last
                           step was checkpointed and a restart resumes from it
```

Both `TrainerError`s are deterministic: running the same pod again fails the same
way, so the operator should not retry them. Anything else (exit 1, a crash, an
out-of-memory kill) may be transient and is retried up to the job's backoffLimit.
`main()` maps these to exit codes in one place; nothing else calls `sys.exit`.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubetune.datavalidation import BAD_INPUT_EXIT_CODE

UNSUPPORTED_EXIT_CODE = 78
STOPPED_EXIT_CODE = 143

__all__ = [
    "BAD_INPUT_EXIT_CODE",
    "STOPPED_EXIT_CODE",
    "UNSUPPORTED_EXIT_CODE",
    "BadInput",
    "Stopped",
    "TrainerError",
    "Unsupported",
]


class TrainerError(Exception):
    """A reason to stop that a retry cannot fix."""

    exit_code = 1


class BadInput(TrainerError):
    """The training or validation data is invalid; `problems` are one-line `path:line: reason`s."""

    exit_code = BAD_INPUT_EXIT_CODE

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"invalid training data ({len(self.problems)} problem(s))")


class Unsupported(TrainerError):
    """The configuration cannot run in this pod (see the module docstring)."""

    exit_code = UNSUPPORTED_EXIT_CODE


class Stopped(Exception):
    """SIGTERM arrived; the latest step is checkpointed."""

    exit_code = STOPPED_EXIT_CODE
