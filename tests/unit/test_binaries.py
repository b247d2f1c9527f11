from __future__ import annotations

from pathlib import Path

import pytest

from kubetune.localcluster import binaries
from kubetune.localcluster.binaries import MODULES, find_binaries


def fake_binaries(directory: Path, names) -> None:
    directory.mkdir()
    for name in names:
        (directory / name).write_text("#!/bin/sh\n")


def test_kubebuilder_assets_are_used_instead_of_building(tmp_path, monkeypatch):
    every = [n for names in MODULES.values() for n in names]
    fake_binaries(tmp_path / "assets", every)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "assets"))

    def no_build(*_args, **_kwargs):
        raise AssertionError("build.sh must not run when every binary is in KUBEBUILDER_ASSETS")

    monkeypatch.setattr(binaries.subprocess, "run", no_build)
    found = find_binaries()
    assert found == {name: tmp_path / "assets" / name for name in every}


def test_only_missing_modules_are_built(tmp_path, monkeypatch):
    fake_binaries(tmp_path / "assets", ["etcd", "kwok"])
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "assets"))
    built = tmp_path / "built"
    calls = []

    class Done:
        returncode = 0
        stdout = f"{built}\n"

    def build(argv, **_kwargs):
        calls.append(argv[2:])
        return Done()

    monkeypatch.setattr(binaries.subprocess, "run", build)
    found = find_binaries()
    assert calls == [["kube", "helm"]]
    assert found["etcd"] == tmp_path / "assets" / "etcd"
    assert found["kube-apiserver"] == built / "kube-apiserver"
    assert found["helm"] == built / "helm"


def test_a_failed_build_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)

    class Failed:
        returncode = 1
        stdout = ""

    monkeypatch.setattr(binaries.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(binaries.BinariesUnavailable, match=r"build\.sh kube etcd kwok helm failed"):
        find_binaries()
