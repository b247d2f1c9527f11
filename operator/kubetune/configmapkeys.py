"""The keys of the dataset ConfigMaps that jobs name, which is all a job's acceptance
checks of them (reconcile/inputs.py): the trainer reads the data from its mount.

A ConfigMap holds up to 1 MiB, and many jobs usually name the same one. Each check
asks for the ConfigMap's metadata alone (a PartialObjectMetadata GET: a few hundred
bytes whatever the data), served from the API server's watch cache (resourceVersion
0: no etcd read, and a version that may trail the newest by the cache's lag, usually
milliseconds). The whole object is read, from etcd, only for a resourceVersion not
seen yet, by one check while the others wait for it: a dataset is decoded once per
change instead of once per job. A ConfigMap the cache does not have is asked for
again from etcd before it counts as missing, and a missing one is never remembered.
"""

from __future__ import annotations

import asyncio

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
        self._reading: dict[tuple[str, str], asyncio.Lock] = {}

    async def keys(self, namespace: str, name: str) -> frozenset[str] | None:
        """The ConfigMap's keys, or None when it does not exist."""
        url = path("v1", "configmaps", namespace, name)
        at = (namespace, name)
        meta = await self.kube.get_metadata(url, cached=True)
        if meta is None:
            meta = await self.kube.get_metadata(url)
        if meta is None:
            self._known.pop(at, None)
            return None
        version = meta["metadata"]["resourceVersion"]
        async with self._reading.setdefault(at, asyncio.Lock()):
            known = self._known.get(at)
            if known is not None and known[0] == version:
                return known[1]
            config_map = await self.kube.get(url)
            if config_map is None:
                self._known.pop(at, None)
                return None
            keys = config_map_keys(config_map)
            self._known.pop(at, None)
            self._known[at] = (config_map["metadata"]["resourceVersion"], keys)
        for kept in (self._known, self._reading):
            while len(kept) > self.kept:
                del kept[next(iter(kept))]
        return keys
