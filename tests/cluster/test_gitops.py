"""A GitOps prune of a model and its deployment together converges.

Argo CD prunes everything of one sync wave at once, in the reverse of its sync order
(custom kinds sort by kind, so ModelDeployment goes before FineTunedModel), with
foreground propagation, and keeps the sync running while anything it pruned still
has a deletionTimestamp. These tests issue the same deletes through the API."""

from __future__ import annotations

import pytest

from tests.factories import make_deployment, make_model
from tests.kube import apply, get, wait_for

pytestmark = pytest.mark.cluster


def ready(cluster, kind, name, namespace):
    obj = get(cluster, kind, name, "-n", namespace)
    return (obj or {}).get("status", {}).get("phase") == "Ready"


@pytest.mark.parametrize(
    "order",
    [
        pytest.param(("mdep/d", "ftm/m"), id="argo-order"),
        pytest.param(("ftm/m", "mdep/d"), id="model-first"),
    ],
)
def test_prune_of_model_and_deployment_converges(cluster, namespace, operator, output_pvc, order):
    apply(cluster, make_model("m"), namespace)
    wait_for("the model Ready", lambda: ready(cluster, "ftm", "m", namespace))
    apply(cluster, make_deployment("d", "m"), namespace)
    wait_for("the deployment Ready", lambda: ready(cluster, "mdep", "d", namespace))
    cluster.kubectl("delete", "-n", namespace, "--cascade=foreground", "--wait=false", *order)
    for kind, name in (("mdep", "d"), ("ftm", "m"), ("deployment", "d"), ("service", "d")):
        wait_for(
            f"{kind}/{name} pruned",
            lambda k=kind, n=name: get(cluster, k, n, "-n", namespace) is None,
        )
