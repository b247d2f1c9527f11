"""`kubetune validate-data` on the corpus of broken files in tests/data/invalid/.

Every `NAME.jsonl` comes with `NAME.expected` (see the README there): the problems
the command must report, each as its line number and one-line reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kubetune import cli
from kubetune.datavalidation import BAD_INPUT_EXIT_CODE

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "invalid"
FILES = sorted(CORPUS.glob("*.jsonl"))


def expected(path: Path) -> list[tuple[int | None, str]]:
    out: list[tuple[int | None, str]] = []
    for row in path.with_suffix(".expected").read_text().splitlines():
        line, reason = row.split("\t", 1)
        out.append((None if line == "-" else int(line), reason))
    return out


def test_corpus_is_big_enough():
    assert len(FILES) >= 15
    assert all(path.with_suffix(".expected").is_file() for path in FILES)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_reports_line_and_reason(path, capsys):
    code = cli.main(["validate-data", str(path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == BAD_INPUT_EXIT_CODE
    assert out["ok"] is False
    got = [(p["line"], p["reason"]) for p in out["training"]["problems"]]
    assert got == expected(path)


@pytest.mark.parametrize("path", FILES[:3], ids=[p.stem for p in FILES[:3]])
def test_human_readable_output_names_file_and_line(path, capsys):
    assert cli.main(["validate-data", str(path)]) == BAD_INPUT_EXIT_CODE
    out = capsys.readouterr().out.splitlines()
    for line, reason in expected(path):
        assert (f"{path}: {reason}" if line is None else f"{path}:{line}: {reason}") in out


def test_console_script_exit_code():
    """The installed `kubetune` command, as a user runs it."""
    exe = Path(sys.executable).parent / "kubetune"
    if not exe.exists():
        pytest.skip("kubetune console script not installed")
    path = CORPUS / "several-problems.jsonl"
    done = subprocess.run([exe, "validate-data", str(path)], capture_output=True, text=True)
    assert done.returncode == BAD_INPUT_EXIT_CODE
    assert f"{path}:2: messages is empty" in done.stdout
    assert f'{path}:10: the last message is from "user", not the assistant' in done.stdout
