"""Static PersistentVolumes for the local control plane, which has no storage
provisioner: a PV pre-bound to one claim, so that a PVC of that name binds at once.
kwok's pods never mount anything, so the host path is never touched."""

from __future__ import annotations

from typing import Any


def build_static_pv(namespace: str, claim: str, size: str = "50Gi") -> dict[str, Any]:
    name = f"{namespace}-{claim}"[:253]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "kubetune-dev"}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
            "storageClassName": "",
            "hostPath": {"path": f"/var/lib/kubetune-dev/{name}"},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }
