"""The keys of the dataset ConfigMaps that jobs name, which is all a job's acceptance
checks of them (reconcile/inputs.py): the trainer reads the data from its mount.

A ConfigMap holds up to 1 MiB, and many jobs usually name the same one. Each check
asks the API server for the ConfigMap's metadata alone (a PartialObjectMetadata GET:
a few hundred bytes whatever the data), and reads the whole object only for a
resourceVersion not seen yet, so a dataset is decoded once per change instead of
once per job. Nothing is taken on trust: every check sees the ConfigMap's current
version, and a missing ConfigMap is never remembered.
"""

from __future__ import annotations

from kubetune.k8s import Kube, Obj, path

# ConfigMaps whose keys are kept; the oldest is forgotten first.
KEPT = 1000


def config_map_keys(config_map: Obj) -> frozenset[str]:
    return frozenset({*(config_map.get("data") or {}), *(config_map.get("binaryData") or {})})


class ConfigMapKeys:
    def __init__(self, kube: Kube, kept: int = KEPT) -> None:
        self.kube = kube
        self.kept = kept
        self._known: dict[tuple[str, str], tuple[str, frozenset[str]]] = {}

    async def keys(self, namespace: str, name: str) -> frozenset[str] | None:
        """The ConfigMap's keys, or None when it does not exist."""
        url = path("v1", "configmaps", namespace, name)
        at = (namespace, name)
        meta = await self.kube.get_metadata(url)
        if meta is None:
            self._known.pop(at, None)
            return None
        known = self._known.get(at)
        if known is not None and known[0] == meta["metadata"]["resourceVersion"]:
            return known[1]
        config_map = await self.kube.get(url)
        if config_map is None:
            self._known.pop(at, None)
            return None
        keys = config_map_keys(config_map)
        self._known.pop(at, None)
        self._known[at] = (config_map["metadata"]["resourceVersion"], keys)
        while len(self._known) > self.kept:
            del self._known[next(iter(self._known))]
        return keys
