"""Atomic checkpoints in the output directory, and finding the latest good one.

Layout (`{output_dir}/checkpoints/`):

```
step-00000040/
  adapter_model.safetensors  adapter_config.json   the LoRA adapter (PEFT format)
  optimizer.pt  scheduler.pt                       torch state dicts
  state.json                                       TrainState (step, epoch, histories)
  manifest.json                                    size and sha256 of every file above
.tmp-step-00000050-<random>/                       being written; never read
```

A checkpoint is written into a `.tmp-*` directory, every file and the directory
are fsynced, `manifest.json` goes last, then the directory is renamed to
`step-N` (atomic on one file system) and the parent is fsynced. So a
`step-N` directory is complete unless something changed it afterwards; a
reader verifies the manifest anyway and falls back to the previous checkpoint
when a file is missing, truncated or altered. Leftover `.tmp-*` directories
(a crash mid-write) are deleted at start, and only the newest `KEEP` complete
checkpoints are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

KEEP = 3
MANIFEST = "manifest.json"
STATE = "state.json"
PREFIX = "step-"


@dataclass
class TrainState:
    """Where training stands; saved with each checkpoint and resumed from."""

    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    """Epochs completed."""
    batch: int = 0
    """Global batches of the current epoch done."""
    trained_tokens: int = 0
    """Target (assistant) tokens trained on, all processes."""
    seen_tokens: int = 0
    """Non-padding input tokens processed, all processes."""
    elapsed: float = 0.0
    """Seconds spent in training steps (evaluation and checkpoints excluded)."""
    train_losses: list[tuple[int, float]] = field(default_factory=list)
    """(step, mean loss of that step) for every step."""
    evaluations: list[tuple[int, float, float]] = field(default_factory=list)
    """(step, validation loss, token accuracy) at the start and each epoch's end."""
    resumed_from: list[int] = field(default_factory=list)
    """Steps this run was resumed from, oldest first."""
    fingerprint: str = ""
    """Digest of the data, plan, base model and process count the run was started with."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        raw = json.loads(text)
        state = cls(**raw)
        state.train_losses = [(int(s), float(v)) for s, v in state.train_losses]
        state.evaluations = [(int(s), float(v), float(a)) for s, v, a in state.evaluations]
        return state


def checkpoint_dir(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


def clean_partial(output_dir: Path) -> None:
    """Deletes what a crash mid-write left behind."""
    root = checkpoint_dir(output_dir)
    if root.is_dir():
        for path in root.glob(".tmp-*"):
            log.info("removing partial checkpoint path=%s", path)
            shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(
    output_dir: Path, state: TrainState, write: Callable[[Path], None], *, keep: int = KEEP
) -> Path:
    """Writes a checkpoint of `state.step`: `write(dir)` adds the model and optimizer files."""
    root = checkpoint_dir(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{state.step:08d}"
    if final.exists():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    try:
        write(tmp)
        (tmp / STATE).write_text(state.to_json())
        manifest = {p.name: _describe(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        for name in manifest:
            _fsync_file(tmp / name)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _fsync_file(tmp / MANIFEST)
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in complete_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint saved path=%s step=%d", final, state.step)
    return final


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """`step-N` directories, oldest first (not verified)."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _step(p.name) is not None]
    return sorted(found, key=lambda p: _step(p.name) or 0)


def latest_checkpoint(output_dir: Path) -> tuple[Path, TrainState] | None:
    """The newest checkpoint whose files match its manifest, with its state; None if none."""
    for path in reversed(complete_checkpoints(output_dir)):
        problem = verify(path)
        if problem is None:
            try:
                return path, TrainState.from_json((path / STATE).read_text())
            except (OSError, ValueError, TypeError) as e:
                problem = f"unreadable state: {e}"
        log.warning("skipping damaged checkpoint path=%s problem=%s", path, problem)
    return None


def verify(path: Path) -> str | None:
    """What is wrong with a checkpoint directory, or None when its files match the manifest."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        return f"no readable manifest: {e}"
    if not isinstance(manifest, dict) or STATE not in manifest:
        return "manifest does not list the state"
    for name, expected in manifest.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if _describe(file) != expected:
            return f"{name} does not match the manifest"
    return None


def _describe(path: Path) -> dict[str, object]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def _step(name: str) -> int | None:
    if not name.startswith(PREFIX) or not name[len(PREFIX) :].isdigit():
        return None
    return int(name[len(PREFIX) :])


def fsync_tree(directory: Path) -> None:
    """fsyncs every file under `directory`, then the directories."""
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            _fsync_file(path)
    for path in sorted((p for p in directory.rglob("*") if p.is_dir()), reverse=True):
        _fsync_dir(path)
    _fsync_dir(directory)


def _fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
