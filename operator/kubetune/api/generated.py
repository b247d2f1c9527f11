"""Every file generated from the resource models, and checking that the committed
copies are current (`kubetune crds [--check]`)."""

from __future__ import annotations

from pathlib import Path

from kubetune.api.apidocs import render_api_reference
from kubetune.api.crdgen import HEADER, build_crd, dump_yaml, render_chart_crds
from kubetune.api.kinds import KINDS

CHART_CRDS = "charts/kubetune/templates/crds.yaml"
API_REFERENCE = "docs/api-reference.md"


def render_files() -> dict[str, str]:
    """Path relative to the repository root -> text, for every generated file."""
    files = {f"crds/{kind.crd_name}.yaml": HEADER + dump_yaml(build_crd(kind)) for kind in KINDS}
    files[CHART_CRDS] = render_chart_crds()
    files[API_REFERENCE] = render_api_reference()
    return files


def write_files(root: Path) -> list[Path]:
    """Write every generated file under `root`; returns the files written."""
    written = []
    for name, text in render_files().items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def stale_files(root: Path) -> list[str]:
    """Generated files under `root` that differ from what the models generate."""
    return [
        name
        for name, text in render_files().items()
        if not (root / name).is_file() or (root / name).read_text() != text
    ]
