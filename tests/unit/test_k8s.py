"""The API client (k8s.py): what it is built with, without a cluster."""

from __future__ import annotations

import asyncio

from kubernetes_asyncio import client

from kubetune.k8s import _ignore_environment


def test_the_client_does_not_look_up_a_proxy_or_netrc_per_request():
    async def main() -> None:
        configuration = client.Configuration()
        configuration.host = "https://127.0.0.1:6443"
        api = client.ApiClient(configuration)
        connector = api.rest_client.pool_manager.connector
        _ignore_environment(api)
        session = api.rest_client.pool_manager
        assert not session.trust_env
        assert session.connector is connector  # same TLS settings and pool
        assert not session.closed
        await api.close()
        assert connector.closed

    asyncio.run(main())
