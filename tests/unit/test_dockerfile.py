"""What can be checked of the Dockerfile without a Docker engine: the targets exist,
every image runs as a fixed non-root user, what the images run exists in the
package, every COPY source exists, and installs are pinned by a complete lock."""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib

import pytest

from tests.kube import ROOT
from tests.lockfiles import LOCKS

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> (instruction, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            current = []
            found[args.split(" AS ")[-1].strip() if " AS " in args else args] = current
        current.append((instruction.upper(), args.strip()))
    return found


def last(stage: list[tuple[str, str]], instruction: str) -> str:
    return [args for ins, args in stage if ins == instruction][-1]


def test_targets_exist():
    assert {"operator", "trainer"} <= set(stages())


@pytest.mark.parametrize("target", ["operator", "trainer"])
def test_runs_as_a_fixed_non_root_user(target):
    user = last(stages()[target], "USER")
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0


def test_operator_entrypoint_is_a_console_script():
    entrypoint = json.loads(last(stages()["operator"], "ENTRYPOINT"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["kubetune", "run"]
    assert entrypoint[0] in scripts


@pytest.mark.parametrize("module", ["kubetune.trainer", "kubetune.serve"])
def test_trainer_image_modules_exist(module):
    assert json.loads(last(stages()["trainer"], "ENTRYPOINT")) == ["python", "-m"]
    assert importlib.util.find_spec(f"{module}.__main__") is not None


def test_copied_files_exist():
    for stage in stages().values():
        for instruction, args in stage:
            if instruction == "COPY":
                for source in args.split()[:-1]:
                    assert (ROOT / source).exists(), source


@pytest.mark.parametrize(
    ("target", "lock"),
    [("operator", "constraints-operator.txt"), ("trainer", "constraints-trainer.txt")],
)
def test_installs_are_pinned_by_a_complete_lock(target, lock):
    install = [args for ins, args in stages()[target] if ins == "RUN" and "pip install" in args]
    assert install
    extra = LOCKS[lock]
    assert f"--constraint {lock} '.[{extra}]'" in install[-1]
    pins = {
        line.split("==")[0]
        for line in (ROOT / lock).read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    names = requirement_names(extra)
    normalized = {p.replace("_", "-") for p in pins}
    assert names <= normalized, names - normalized


def requirement_names(extra: str) -> set[str]:
    """The distributions kubetune[extra] requires, with those of the extras it names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names: set[str] = set()
    for req in project["dependencies"] + project["optional-dependencies"][extra]:
        if included := re.fullmatch(r"kubetune\[(\w+)\]", req):
            names |= requirement_names(included[1])
        else:
            names.add(re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].lower().replace("_", "-"))
    return names
