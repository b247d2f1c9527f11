from __future__ import annotations

import yaml

from tests import argocd_cm


def test_committed_argocd_cm_is_current():
    assert argocd_cm.TARGET.read_text() == argocd_cm.render()


def test_every_health_script_is_embedded_verbatim():
    data = yaml.safe_load(argocd_cm.TARGET.read_text())["data"]
    for kind in argocd_cm.KINDS:
        script = (argocd_cm.HEALTH / kind / "health.lua").read_text()
        assert (
            data[f"resource.customizations.health.kubetune.io_{kind}"].rstrip() == script.rstrip()
        )
    ignored = yaml.safe_load(
        data["resource.customizations.ignoreResourceUpdates.kubetune.io_FineTuneJob"]
    )
    assert ignored == {"jsonPointers": ["/status/progress"]}
