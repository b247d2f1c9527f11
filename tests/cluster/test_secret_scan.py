"""The secret scan (tests/secretscan.py) against the real API server: one `kubectl get`
returns the namespace's kubetune objects, Events and Secrets, and a Secret's value in an
Event's message is found. (The autouse fixture runs the same scan after every test.)"""

from __future__ import annotations

import json

import pytest

from tests.factories import make_model
from tests.kube import apply
from tests.secretscan import cluster_texts, find_leaks, list_namespace, mask

pytestmark = pytest.mark.cluster

VALUE = "sp-client-secret-0123456789"


def test_scan_finds_a_secret_value_in_an_event(cluster, namespace):
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "azure-sp"},
        "stringData": {"AZURE_CLIENT_ID": "client-0001", "AZURE_CLIENT_SECRET": VALUE},
    }
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "m.leak"},
        "involvedObject": {"kind": "FineTunedModel", "name": "m", "namespace": namespace},
        "reason": "Leaky",
        "message": f"logged in with {VALUE}",
        "type": "Warning",
    }
    for obj in (secret, make_model("m"), event):
        assert apply(cluster, obj, namespace).returncode == 0
    objects = list_namespace(cluster.kubectl, namespace)
    assert objects is not None
    assert {o["kind"] for o in objects} >= {"Secret", "Event", "FineTunedModel"}
    texts, secrets = cluster_texts(objects)
    assert VALUE in secrets
    assert "client-0001" not in secrets  # an identifier, not a secret
    assert find_leaks(texts, secrets) == [
        f"event Leaky on FineTunedModel/m (m.leak): {mask(VALUE)}"
    ]
    # Gone again, so that this test's own scan passes.
    cluster.kubectl("delete", "event", "m.leak", "-n", namespace)
    texts, _ = cluster_texts(list_namespace(cluster.kubectl, namespace) or [])
    assert json.dumps(texts).count(VALUE) == 0
