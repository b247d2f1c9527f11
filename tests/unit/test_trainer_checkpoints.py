"""Atomic checkpoints: complete ones are found, damaged or half-written ones never are."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kubetune.trainer import checkpoints as ckpt


def write_files(directory: Path) -> None:
    (directory / "adapter_model.safetensors").write_bytes(os.urandom(256))
    (directory / "optimizer.pt").write_bytes(os.urandom(512))


def save(output: Path, step: int, **kw: object) -> Path:
    state = ckpt.TrainState(step=step, epoch=step // 10, train_losses=[(step, 1.0 / step)])
    return ckpt.save_checkpoint(output, state, write_files, **kw)


def test_save_then_find_latest(tmp_path):
    save(tmp_path, 5)
    path = save(tmp_path, 10)
    assert path.name == "step-00000010"
    assert sorted(p.name for p in path.iterdir()) == [
        "adapter_model.safetensors",
        "manifest.json",
        "optimizer.pt",
        "state.json",
    ]
    found = ckpt.latest_checkpoint(tmp_path)
    assert found is not None
    assert found[0] == path
    assert found[1].step == 10
    assert found[1].train_losses == [(10, 0.1)]


def test_no_checkpoint(tmp_path):
    assert ckpt.latest_checkpoint(tmp_path) is None


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: (p / "optimizer.pt").write_bytes(b"short"), id="truncated"),
        pytest.param(lambda p: (p / "adapter_model.safetensors").unlink(), id="missing-file"),
        pytest.param(lambda p: (p / "manifest.json").unlink(), id="no-manifest"),
        pytest.param(lambda p: (p / "manifest.json").write_text("{"), id="bad-manifest"),
        pytest.param(
            lambda p: (p / "adapter_model.safetensors").write_bytes(os.urandom(256)),
            id="same-size-other-bytes",
        ),
    ],
)
def test_damaged_last_checkpoint_falls_back(tmp_path, damage):
    save(tmp_path, 5)
    damage(save(tmp_path, 10))
    found = ckpt.latest_checkpoint(tmp_path)
    assert found is not None
    assert found[1].step == 5


def test_half_written_checkpoint_is_never_used_and_is_cleaned(tmp_path):
    save(tmp_path, 5)

    def crash(directory: Path) -> None:
        write_files(directory)
        raise KeyboardInterrupt  # e.g. killed mid-write

    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, ckpt.TrainState(step=10), crash)
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path)] == ["step-00000005"]
    # A SIGKILL leaves the temporary directory behind: it is ignored, then removed.
    leftover = ckpt.checkpoint_dir(tmp_path) / ".tmp-step-00000010-abc"
    leftover.mkdir()
    write_files(leftover)
    found = ckpt.latest_checkpoint(tmp_path)
    assert found is not None
    assert found[1].step == 5
    ckpt.clean_partial(tmp_path)
    assert not leftover.exists()


def test_only_the_newest_are_kept(tmp_path):
    for step in (1, 2, 3, 4, 5):
        save(tmp_path, step, keep=2)
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path)] == [
        "step-00000004",
        "step-00000005",
    ]


def test_saving_the_same_step_twice_keeps_the_first(tmp_path):
    first = save(tmp_path, 7)
    manifest = (first / "manifest.json").read_text()
    assert save(tmp_path, 7) == first
    assert (first / "manifest.json").read_text() == manifest


def test_state_round_trip():
    state = ckpt.TrainState(
        step=3,
        epoch=1,
        batch=2,
        trained_tokens=100,
        seen_tokens=300,
        elapsed=1.5,
        train_losses=[(1, 2.0), (2, 1.5)],
        evaluations=[(0, 6.8, 0.01)],
        resumed_from=[2],
        fingerprint="abc",
    )
    assert ckpt.TrainState.from_json(state.to_json()) == state
    assert json.loads(state.to_json())["step"] == 3
