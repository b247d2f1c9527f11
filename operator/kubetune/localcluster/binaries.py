"""Finds the control plane's binaries: KUBEBUILDER_ASSETS first, then the build cache.

Missing binaries are built by tests/cluster/build.sh from the pinned Go modules
(minutes the first time, cached in ~/.cache/kubetune after that).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# Which Go module under tests/cluster/ builds which binary.
MODULES: dict[str, tuple[str, ...]] = {
    "kube": ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
    "etcd": ("etcd",),
    "kwok": ("kwok",),
    "helm": ("helm",),
}


class BinariesUnavailable(RuntimeError):
    """The binaries could not be found or built."""


def source_root() -> Path:
    """The kubetune checkout this package was installed from (editable install)."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "tests" / "cluster" / "build.sh").is_file():
        raise BinariesUnavailable(
            f"no kubetune source checkout at {root}: the local control plane is built "
            "from tests/cluster/ (install kubetune with `pip install -e .` from a clone)"
        )
    return root


def find_binaries() -> dict[str, Path]:
    """Binary name -> path for every binary in MODULES."""
    found: dict[str, Path] = {}
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        for names in MODULES.values():
            for name in names:
                if (Path(assets) / name).is_file():
                    found[name] = Path(assets) / name
    missing = [m for m, names in MODULES.items() if any(n not in found for n in names)]
    if missing:
        script = source_root() / "tests" / "cluster" / "build.sh"
        done = subprocess.run(
            ["bash", str(script), *missing], stdout=subprocess.PIPE, text=True, check=False
        )
        if done.returncode != 0:
            raise BinariesUnavailable(f"{script} {' '.join(missing)} failed: see its output above")
        built = Path(done.stdout.strip().splitlines()[-1])
        for module in missing:
            for name in MODULES[module]:
                found.setdefault(name, built / name)
    return found
