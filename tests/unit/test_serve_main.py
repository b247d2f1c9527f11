"""The command line's pure parts: which model ids are served, and the CPU limit."""

from __future__ import annotations

import pytest

from kubetune.serve.__main__ import build_parser, default_base_name, main, served_models
from kubetune.serve.transformers_engine import cgroup_cpu_limit


def served(*argv: str) -> dict[str, bool]:
    parser = build_parser()
    return dict(served_models(parser.parse_args(list(argv)), parser).adapter_by_id)


def test_adapter_and_base_are_both_served(tmp_path):
    base = tmp_path / "phi3-mini"
    base.mkdir()
    assert served(f"--base-model={base}", "--adapter=/a/xbox", "--model-name=xbox") == {
        "xbox": True,
        "phi3-mini": False,
    }
    assert served("--base-model=org/model", "--adapter=/a/xbox") == {
        "xbox": True,
        "org/model": False,
    }
    assert served("--base-model=org/model", "--adapter=/a/xbox", "--base-model-name=base") == {
        "xbox": True,
        "base": False,
    }


def test_merged_or_adapterless_serves_one_model():
    assert served("--base-model=org/m", "--adapter=/a/x", "--merge") == {"x": True}
    assert served("--base-model=org/m") == {"org/m": False}
    assert served("--base-model=org/m", "--model-name=plain") == {"plain": False}


def test_default_base_name_of_a_directory_is_its_name(tmp_path):
    assert default_base_name(str(tmp_path / ".")) == tmp_path.name
    assert default_base_name("microsoft/Phi-3-mini-4k-instruct") == (
        "microsoft/Phi-3-mini-4k-instruct"
    )


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--base-model=org/m", "--adapter=/a/m", "--model-name=org/m"], id="same-ids"),
        pytest.param(["--base-model=org/m", "--threads=0"], id="no-threads"),
        pytest.param(["--base-model=org/m", "--default-max-tokens=0"], id="no-tokens"),
        pytest.param(["--adapter=/a"], id="no-base"),
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "want"),
    [
        pytest.param("max 100000\n", None, id="unlimited"),
        pytest.param("200000 100000\n", 2, id="two-cpus"),
        pytest.param("150000 100000\n", 2, id="rounded-up"),
        pytest.param("10000 100000\n", 1, id="at-least-one"),
        pytest.param("garbage", None, id="unreadable"),
    ],
)
def test_cgroup_cpu_limit(tmp_path, content, want):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(content)
    assert cgroup_cpu_limit(cpu_max) == want


def test_cgroup_cpu_limit_without_cgroup_v2(tmp_path):
    assert cgroup_cpu_limit(tmp_path / "missing") is None
