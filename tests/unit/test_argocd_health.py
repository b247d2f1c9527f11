"""The Argo CD health checks in examples/argocd/health/, run in a sandbox like argocd-cm's.

Argo CD runs a health script from argocd-cm in gopher-lua (Lua 5.1) with only the
base, table and package libraries and an os reduced to time/date. Upstream's own
harness opens every library, so a script calling `string.find` passes there and
is Unknown in a real cluster. Here each script runs in a lupa Lua 5.1 runtime whose
globals are cut down to that sandbox, against every case of every health_test.yaml
(Argo CD's upstream layout).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa.lua51 import LuaError, LuaRuntime

from kubetune.api.finetunedmodel import FineTunedModelPhase
from kubetune.api.finetunejob import FineTuneJobPhase
from kubetune.api.kinds import KINDS
from kubetune.api.modeldeployment import ModelDeploymentPhase

ROOT = Path(__file__).resolve().parents[2]
HEALTH = ROOT / "examples" / "argocd" / "health" / "kubetune.io"
PHASES: dict[str, type[StrEnum]] = {
    "FineTuneJob": FineTuneJobPhase,
    "FineTunedModel": FineTunedModelPhase,
    "ModelDeployment": ModelDeploymentPhase,
}

# What argocd-cm scripts see (argo-cd util/lua/lua.go opens base, package, table and
# a safe os): gopher-lua's base functions, less those that load code or files, which
# no health check needs, so this sandbox is if anything stricter than Argo CD's.
GLOBALS = frozenset(
    {
        *("assert", "collectgarbage", "error", "getfenv", "getmetatable", "ipairs"),
        *("newproxy", "next", "pairs", "pcall", "print", "rawequal", "rawget", "rawset"),
        *("select", "setfenv", "setmetatable", "tonumber", "tostring", "type", "unpack"),
        *("xpcall", "_G", "_VERSION", "table", "os"),
    }
)

RESTRICT = """
function(keep)
  -- Without the string library strings have no metatable: ("x"):find fails too.
  debug.setmetatable("", nil)
  local safe_os = {time = os.time, date = os.date}
  for name in pairs(_G) do
    if not keep[name] then
      _G[name] = nil
    end
  end
  os = safe_os
end
"""


def sandbox() -> LuaRuntime:
    """A fresh Lua 5.1 runtime with argocd-cm's globals only."""
    lua = LuaRuntime(register_eval=False, register_builtins=False)
    lua.eval(RESTRICT)(lua.table_from({name: True for name in GLOBALS}))
    return lua


def to_lua(lua: LuaRuntime, value: object) -> object:
    """JSON-like data as Lua values, as Argo CD decodes an object: lists 1-based, nulls absent."""
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"non-string key {key!r}")
            if item is not None:
                table[key] = to_lua(lua, item)
        return table
    if isinstance(value, list):
        return lua.table(*(to_lua(lua, item) for item in value if item is not None))
    if isinstance(value, str | int | float):  # bool is an int
        return value
    # e.g. a datetime from an unquoted timestamp: kubectl quotes them, so must fixtures.
    raise TypeError(f"{type(value).__name__} is not JSON: {value!r}")


def run_health(script: str, obj: dict[str, Any]) -> dict[str, str]:
    """The script's result for `obj`, checked to be what Argo CD can read."""
    lua = sandbox()
    lua.globals().obj = to_lua(lua, obj)
    result = lua.execute(script)
    got = dict(result.items())
    assert set(got) == {"status", "message"}, got
    assert all(isinstance(v, str) for v in got.values()), got
    return got


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def cases() -> list[Any]:
    found = []
    for test_file in sorted(HEALTH.glob("*/health_test.yaml")):
        kind = test_file.parent.name
        for case in load_yaml(test_file)["tests"]:
            found.append(
                pytest.param(
                    kind, case["inputPath"], case["healthStatus"], id=f"{kind}/{case['inputPath']}"
                )
            )
    return found


def fixtures(kind: str) -> list[dict[str, Any]]:
    return [load_yaml(p) for p in sorted((HEALTH / kind / "testdata").glob("*.yaml"))]


def script(kind: str) -> str:
    return (HEALTH / kind / "health.lua").read_text()


@pytest.mark.parametrize(("kind", "input_path", "expected"), cases())
def test_health(kind: str, input_path: str, expected: dict[str, str]):
    obj = load_yaml(HEALTH / kind / input_path)
    assert run_health(script(kind), obj) == expected


def test_every_kind_has_a_health_check():
    assert {p.parent.name for p in HEALTH.glob("*/health_test.yaml")} == {k.kind for k in KINDS}
    assert {p.parent.name for p in HEALTH.glob("*/health.lua")} == {k.kind for k in KINDS}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_fixtures_are_used_and_match_the_crd(kind):
    listed = {c["inputPath"] for c in load_yaml(HEALTH / kind.kind / "health_test.yaml")["tests"]}
    on_disk = {f"testdata/{p.name}" for p in (HEALTH / kind.kind / "testdata").glob("*.yaml")}
    assert listed == on_disk
    known = {f.alias or name for name, f in kind.status.model_fields.items()}
    for obj in fixtures(kind.kind):
        assert (obj["apiVersion"], obj["kind"]) == ("kubetune.io/v1alpha1", kind.kind)
        assert isinstance(obj["metadata"]["generation"], int)
        if "status" in obj:
            assert set(obj["status"]) <= known
            kind.status.model_validate(obj["status"])


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_fixtures_cover_every_phase_and_the_operator_lagging(kind):
    objs = fixtures(kind.kind)
    statuses = [o["status"] for o in objs if "status" in o]
    assert {s.get("phase") for s in statuses} >= set(PHASES[kind.kind])
    assert any("status" not in o for o in objs)
    assert any(
        o["status"]["observedGeneration"] < o["metadata"]["generation"]
        for o in objs
        if "status" in o
    )
    assert any(
        (c["type"], c["status"]) == ("Accepted", "False")
        for s in statuses
        for c in s.get("conditions", [])
    )


@pytest.mark.parametrize(
    ("kind", "fixture"),
    [
        ("FineTuneJob", "running.yaml"),
        ("FineTunedModel", "ready.yaml"),
        ("ModelDeployment", "ready.yaml"),
    ],
)
def test_unknown_phase_is_unknown(kind, fixture):
    obj = load_yaml(HEALTH / kind / "testdata" / fixture)
    obj["status"]["phase"] = "Hibernating"
    assert run_health(script(kind), obj) == {
        "status": "Unknown",
        "message": "Unknown phase Hibernating",
    }


def test_numbers_that_arrive_as_strings():
    # Argo CD hands json.Number values to Lua as strings.
    obj = load_yaml(HEALTH / "FineTuneJob" / "testdata" / "running.yaml")
    obj["metadata"]["generation"] = "1"
    obj["status"]["observedGeneration"] = "1"
    obj["status"]["progress"]["percent"] = "42"
    assert run_health(script("FineTuneJob"), obj)["message"] == "Running: 42% complete"


def test_shared_helpers_are_identical():
    def shared(kind: str) -> str:
        text = script(kind)
        return text[text.index("-- BEGIN shared helpers") : text.index("-- END shared helpers")]

    assert len({shared(k.kind) for k in KINDS}) == 1


@pytest.mark.parametrize(
    "snippet",
    [
        'return string.find("abc", "b")',
        'return ("abc"):find("b")',
        'return ("abc"):len()',
        "return math.floor(1.5)",
        'return io.write("")',
        'return os.getenv("HOME")',
        'return require("string")',
        'return loadstring("return 1")()',
        "return debug.getinfo(1)",
    ],
)
def test_sandbox_is_real(snippet):
    LuaRuntime(register_eval=False, register_builtins=False).execute(snippet)  # control
    with pytest.raises(LuaError):
        sandbox().execute(snippet)


def test_sandbox_keeps_what_argocd_cm_has():
    got = sandbox().execute(
        'return type(os.time()), os.date("!%Y", 0), table.concat({"a", "b"}, ","), #"abc"'
    )
    assert got == ("number", "1970", "a,b", 3)
