"""Our API client (k8s.py) against the real API server: idempotent creates, missing
objects, refusals, and credentials read again after a 401 (a rotated token)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import yaml

from kubetune.errors import BackendRejected
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
            assert await kube.get_config_map(namespace, "absent") is None
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
                await kube.get_config_map(namespace, "absent")
            assert refused.value.status == 401  # the same stale token: no loop, no retry storm
            token_kubeconfig(cluster, config, reader_token)  # what a token rotation does
            assert await kube.get_config_map(namespace, "absent") is None
            made, _ = await kube.create(
                path("v1", "configmaps", namespace), {"metadata": {"name": "made"}}
            )
            assert made["metadata"]["name"] == "made"
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
