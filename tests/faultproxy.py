"""A fault-injecting proxy in front of the test API server, on loopback.

Clients talk plain HTTP to the proxy, which forwards to the real kube-apiserver
with the admin certificate. It can answer a share of ordinary requests with 429
(with Retry-After) or 5xx instead of forwarding them, and end watches with a 410
Gone (an expired resourceVersion), the faults a busy or restarting API server gives
a controller. It counts what it injected so tests can prove the faults happened.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

from kubetune.localcluster.controlplane import ControlPlane, free_port
from kubetune.localcluster.pki import pki_in

HOP_BY_HOP = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "accept-encoding",
}
EXPIRED = {
    "type": "ERROR",
    "object": {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": "Expired",
        "message": "too old resource version",
        "code": 410,
    },
}


@dataclass
class Faults:
    rate: float = 0.0
    """Share of ordinary (non-watch) requests answered with a fault instead."""
    statuses: tuple[int, ...] = (429, 500, 503)
    watch_expiries: int = 0
    """How many watches end with 410 Gone before any event."""
    seed: int = 0


@dataclass
class FaultProxy:
    cp: ControlPlane
    faults: Faults
    port: int = field(default_factory=free_port)
    injected: Counter[int] = field(default_factory=Counter)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault proxy did not start")

    def stop(self) -> None:
        if self._loop is None or self._runner is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
            "current-context": "proxy",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def _serve(self, ready: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start(ready))
        self._loop.run_forever()

    async def _start(self, ready: threading.Event) -> None:
        pki = pki_in(self.cp.workdir / "pki")
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        rng = random.Random(self.faults.seed)
        expiries = [self.faults.watch_expiries]

        async def handle(request: web.Request) -> web.StreamResponse:
            watching = request.query.get("watch") in ("true", "1")
            if watching and expiries[0] > 0:
                expiries[0] -= 1
                self.injected[410] += 1
                return web.Response(
                    text=json.dumps(EXPIRED) + "\n", content_type="application/json"
                )
            if not watching and rng.random() < self.faults.rate:
                status = rng.choice(self.faults.statuses)
                self.injected[status] += 1
                body = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": "injected by the fault proxy",
                    "code": status,
                }
                headers = {"Retry-After": "1"} if status == 429 else {}
                return web.json_response(body, status=status, headers=headers)
            forward = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
            payload = await request.read()
            async with session.request(
                request.method,
                f"{self.cp.server}{request.path_qs}",
                headers=forward,
                # No body, no Content-Type: aiohttp would add one, and the API server
                # refuses a GET that claims an octet-stream body (415).
                data=payload or None,
                skip_auto_headers=("Content-Type",),
            ) as upstream:
                response = web.StreamResponse(
                    status=upstream.status,
                    headers={
                        k: v
                        for k, v in upstream.headers.items()
                        if k.lower() not in HOP_BY_HOP | {"content-encoding"}
                    },
                )
                await response.prepare(request)
                try:
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                    await response.write_eof()
                except ConnectionResetError:
                    pass  # the client went away (a watch it closed)
                return response

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", handle)
        app.on_cleanup.append(lambda _: session.close())
        # Open watches would otherwise hold the shutdown for a minute.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        ready.set()
