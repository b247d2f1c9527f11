"""Our API client (k8s.py) and informer (informer.py) against the real API server:
idempotent creates, missing objects, refusals, credentials read again after a 401 (a
rotated token), paged lists, and watches of labelled objects."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
import yaml

from kubetune.configmapkeys import ConfigMapKeys
from kubetune.errors import BackendRejected
from kubetune.informer import Informer
from kubetune.k8s import ApiError, Kube, path

pytestmark = pytest.mark.cluster


def token_kubeconfig(cluster, target: Path, token: str) -> Path:
    """The test cluster's kubeconfig with its user replaced by a bearer token."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [{"name": "bearer", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "bearer"
    target.write_text(yaml.safe_dump(config))
    return target


@pytest.fixture
def reader_token(cluster, namespace) -> str:
    """A ServiceAccount token allowed to read ConfigMaps in the namespace."""
    account = "reader"
    cluster.kubectl("create", "serviceaccount", account, "-n", namespace)
    cluster.kubectl(
        "create", "role", account, "--verb=get,create", "--resource=configmaps", "-n", namespace
    )
    cluster.kubectl(
        "create",
        "rolebinding",
        account,
        f"--role={account}",
        f"--serviceaccount={namespace}:{account}",
        "-n",
        namespace,
    )
    return str(cluster.kubectl("create", "token", account, "-n", namespace).stdout.strip())


def test_reads_creates_and_refusals(cluster, namespace, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))

    async def main() -> None:
        kube = await Kube.connect()
        try:
            assert not kube.session.trust_env  # no proxy or netrc lookups per request
            assert await kube.get(path("v1", "configmaps", namespace, "absent")) is None
            body = {"metadata": {"name": "c"}, "data": {"k": "v"}}
            first, created = await kube.create(path("v1", "configmaps", namespace), body)
            again, created_again = await kube.create(path("v1", "configmaps", namespace), body)
            assert (created, created_again) == (True, False)
            assert again["metadata"]["uid"] == first["metadata"]["uid"]
            with pytest.raises(BackendRejected, match=r"metadata\.name"):
                await kube.create(path("v1", "configmaps", namespace), {"metadata": {"name": "A_"}})
        finally:
            await kube.close()

    asyncio.run(main())


def test_a_rotated_token_is_read_again_after_a_401(
    cluster, namespace, reader_token, tmp_path, monkeypatch
):
    config = token_kubeconfig(cluster, tmp_path / "kubeconfig", f"stale-{uuid.uuid4().hex}")
    monkeypatch.setenv("KUBECONFIG", str(config))

    async def main() -> None:
        kube = await Kube.connect()
        try:
            with pytest.raises(ApiError) as refused:
                await kube.get(path("v1", "configmaps", namespace, "absent"))
            assert refused.value.status == 401  # the same stale token: no loop, no retry storm
            token_kubeconfig(cluster, config, reader_token)  # what a token rotation does
            assert await kube.get(path("v1", "configmaps", namespace, "absent")) is None
            made, _ = await kube.create(
                path("v1", "configmaps", namespace), {"metadata": {"name": "made"}}
            )
            assert made["metadata"]["name"] == "made"
        finally:
            await kube.close()

    asyncio.run(main())


class CountingReads:
    """Our client, counting the whole-object GETs that go through it."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.whole = 0

    async def get(self, url: str) -> dict | None:
        self.whole += 1
        return await self.kube.get(url)

    async def get_metadata(self, url: str, *, cached: bool = False) -> dict | None:
        return await self.kube.get_metadata(url, cached=cached)


async def eventually(keys: ConfigMapKeys, namespace: str, name: str, want: set[str] | None) -> None:
    """Check until the keys are `want`: the watch cache catches up within moments."""
    for _ in range(100):
        if await keys.keys(namespace, name) == want:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"ConfigMap {name}'s keys never became {want}")


def test_dataset_keys_are_read_whole_once_per_version(cluster, namespace, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    dataset = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "data"},
        "data": {"train.jsonl": "x" * 500_000},
    }
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(dataset))

    async def main() -> None:
        kube = await Kube.connect()
        try:
            meta = await kube.get_metadata(path("v1", "configmaps", namespace, "data"))
            assert meta is not None
            assert meta["kind"] == "PartialObjectMetadata"
            assert "data" not in meta
            reads = CountingReads(kube)
            keys = ConfigMapKeys(reads)  # type: ignore[arg-type]
            for _ in range(3):
                assert await keys.keys(namespace, "data") == {"train.jsonl"}
            assert reads.whole == 1
            patch = {"data": {"val.jsonl": "{}"}}
            await kube.patch(path("v1", "configmaps", namespace, "data"), patch)
            # The watch cache shows the new version within moments.
            await eventually(keys, namespace, "data", {"train.jsonl", "val.jsonl"})
            assert reads.whole == 2
            # Many checks of a version not seen yet at once: one of them reads it.
            other = {"metadata": {"name": "other"}, "data": {"a.jsonl": "{}"}}
            await kube.create(path("v1", "configmaps", namespace), other)
            answers = await asyncio.gather(*(keys.keys(namespace, "other") for _ in range(10)))
            assert answers == [{"a.jsonl"}] * 10
            assert reads.whole == 3
            await kube.request("DELETE", path("v1", "configmaps", namespace, "data"))
            assert await keys.keys(namespace, "absent") is None
            # Deleted: gone from etcd at once, from the watch cache within moments.
            assert await keys.keys(namespace, "data") in (None, {"train.jsonl", "val.jsonl"})
            await eventually(keys, namespace, "data", None)
        finally:
            await kube.close()

    asyncio.run(main())


def test_collections_are_read_in_pages(cluster, namespace, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    for i in range(5):
        cluster.kubectl("create", "configmap", f"page-{i}", "-n", namespace)

    async def main() -> list[str]:
        kube = await Kube.connect()
        try:
            url = path("v1", "configmaps", namespace)
            return [o["metadata"]["name"] async for o in kube.iter_items(url, page=2)]
        finally:
            await kube.close()

    names = asyncio.run(main())
    assert sorted(n for n in names if n.startswith("page-")) == [f"page-{i}" for i in range(5)]


def test_an_informer_follows_labelled_objects_and_relists_what_it_missed(
    cluster, namespace, monkeypatch
):
    """Only labelled objects come (the API server filters); after a restart the list
    names every object there is, so one deleted in between is known to be gone."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    cluster.kubectl("create", "configmap", "before", "-n", namespace)
    cluster.kubectl("label", "configmap", "before", "informed=yes", "-n", namespace)
    seen: list[tuple[str, str]] = []
    listed: list[set[tuple[str, str]]] = []

    def informer(kube: Kube) -> Informer:
        return Informer(
            kube,
            "v1",
            "configmaps",
            namespace,
            selector="informed",
            on_event=lambda event, obj: seen.append((event, obj["metadata"]["name"])),
            on_listed=lambda ns, names: listed.append(names) if ns == namespace else None,
        )

    async def until(what) -> None:
        for _ in range(100):
            if what():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(seen)

    async def main() -> None:
        kube = await Kube.connect()
        try:
            first = informer(kube)
            running = asyncio.ensure_future(first.run())
            await first.synced.wait()
            assert (seen, listed) == ([("ADDED", "before")], [{(namespace, "before")}])
            collection = path("v1", "configmaps", namespace)
            await kube.create(collection, {"metadata": {"name": "plain"}})
            labelled = {"name": "new", "labels": {"informed": "1"}}
            await kube.create(collection, {"metadata": labelled})
            await kube.patch(f"{collection}/new", {"data": {"k": "v"}})
            await kube.request("DELETE", f"{collection}/new")
            await until(lambda: ("DELETED", "new") in seen)
            assert seen[1:] == [("ADDED", "new"), ("MODIFIED", "new"), ("DELETED", "new")]
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

            await kube.request("DELETE", f"{collection}/before")
            second = informer(kube)
            running = asyncio.ensure_future(second.run())
            await second.synced.wait()
            assert listed[-1] == set()  # "before" is gone: the caller drops it
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        finally:
            await kube.close()

    asyncio.run(main())
