"""The Azure fake as a running server: HTTPS on one loopback port, a CONNECT proxy on another.

It runs in-process, on its own asyncio loop in a daemon thread: tests read and change its
state directly (no IPC), the blocking SDK calls in the test's thread reach it over real
sockets, and a separate operator process can reach it too through `env()`.

One TLS port serves every host: ARM, the token endpoint, cloud metadata and run history at
`https://127.0.0.1:PORT`; blob storage at `https://{account}.blob.{suffix}` and serverless
inference at `https://{endpoint}.models.{suffix}`, which no resolver knows: clients reach
them through the proxy (`HTTPS_PROXY`), which tunnels only hosts under the fake's
`.invalid` suffix to the TLS port and refuses anything else, so a misconfigured test can
never reach real Azure. Requests are told apart by their Host header.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.azurefake import blobs, routes, serving
from tests.azurefake.faults import RESET, Fault, FaultTable
from tests.azurefake.state import AzureState, Blob, Job, Workspace
from tests.azurefake.tls import TlsFiles
from tests.azurefake.wire import Call, Reply, Route, error

log = logging.getLogger(__name__)

SUFFIX = "fake.invalid"
ROUTES: tuple[Route, ...] = routes.ROUTES + serving.ROUTES + blobs.ROUTES
# Routes that take no bearer token: identity, discovery, and data planes with their own keys.
ANONYMOUS = frozenset({"token", "openid", "metadata", "discovery.get", "inference.chat"})


@dataclass(frozen=True)
class Recorded:
    """One request the fake received, and what it answered (status 0: connection reset)."""

    route: str  # "" when no route matched
    method: str
    host: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int
    at: float = field(default_factory=time.monotonic)  # when it arrived

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode()))

    @property
    def api_version(self) -> str | None:
        return self.query.get("api-version")


class AzureFake:
    """A protocol-level fake of the Azure REST API for the real azure-ai-ml/azure-identity."""

    def __init__(
        self, tls: TlsFiles, *, workspace: Workspace | None = None, suffix: str = SUFFIX
    ) -> None:
        if not suffix.endswith(".invalid"):
            raise ValueError("the fake's DNS suffix must end in .invalid (RFC 2606)")
        self.tls = tls
        self.suffix = suffix
        self.cloud_name = f"KubetuneFake{uuid.uuid4().hex[:12]}"
        self.state = AzureState(
            workspace or Workspace(), storage_suffix=suffix, cloud_name=self.cloud_name
        )
        self.faults = FaultTable()
        self.refused: list[str] = []  # proxy targets refused (anything outside the suffix)
        self._tunnels: set[asyncio.Task[None]] = set()
        self._records: list[Recorded] = []
        self._records_lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="azure-fake", daemon=True
        )
        self._runner: web.AppRunner | None = None
        self._proxy: asyncio.Server | None = None
        self._host_re = {
            "blob": re.compile(rf"^[a-z0-9]+\.blob\.{re.escape(suffix)}$"),
            "inference": re.compile(rf"^(?P<endpoint>[^.]+)\.models\.{re.escape(suffix)}$"),
        }
        self.port = 0
        self.proxy_port = 0

    # --- lifecycle ----------------------------------------------------------
    def start(self) -> AzureFake:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        log.info("azure fake listening base_url=%s proxy=%s", self.base_url, self.proxy_url)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __enter__(self) -> AzureFake:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def _start(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls.server_cert, self.tls.server_key)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = _listen()
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, ssl_context=context).start()
        proxy_sock = _listen()
        self.proxy_port = proxy_sock.getsockname()[1]
        self._proxy = await asyncio.start_server(self._tunnel, sock=proxy_sock)

    async def _stop(self) -> None:
        if self._proxy is not None:
            self._proxy.close()
            for task in self._tunnels:
                task.cancel()
            await asyncio.gather(*self._tunnels, return_exceptions=True)
            await self._proxy.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- what clients need --------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def cloud_metadata(self) -> dict[str, str]:
        """The six keys `MLClient(cloud=..., cloud_metadata=...)` requires."""
        return {
            "azure_portal": f"https://portal.azure.{self.suffix}/",
            "resource_manager": f"{self.base_url}/",
            "active_directory": f"{self.base_url}/",
            "aml_resource_id": f"https://ml.azure.{self.suffix}/",
            "storage_endpoint": self.suffix,
            "registry_discovery_endpoint": f"{self.base_url}/",
        }

    def env(self) -> dict[str, str]:
        """Environment for a process whose SDKs must reach this fake (and nothing else)."""
        no_proxy = "127.0.0.1,localhost"
        return {
            "REQUESTS_CA_BUNDLE": str(self.tls.ca_cert),
            "HTTPS_PROXY": self.proxy_url,
            "https_proxy": self.proxy_url,
            # Plain-HTTP probes (IMDS at 169.254.169.254) end at the proxy's refusal too.
            "HTTP_PROXY": self.proxy_url,
            "http_proxy": self.proxy_url,
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
            "AZURE_AUTHORITY_HOST": self.base_url,
            "ARM_CLOUD_METADATA_URL": f"{self.base_url}/metadata/endpoints?api-version=2022-09-01",
        }

    # --- test control -------------------------------------------------------
    def inject(self, route: str, fault: Fault, times: int | None = 1) -> None:
        """Answer the next `times` requests to `route` ("*": any) with `fault` (None: always)."""
        if route != "*" and route not in {r.name for r in ROUTES}:
            raise ValueError(f"no route {route!r}")
        self.faults.add(route, fault, times)

    def clear_faults(self) -> None:
        self.faults.clear()

    @property
    def requests(self) -> list[Recorded]:
        with self._records_lock:
            return list(self._records)

    def calls(self, route: str) -> list[Recorded]:
        return [r for r in self.requests if r.route == route]

    def unmatched(self) -> list[Recorded]:
        return [r for r in self.requests if not r.route]

    def api_versions(self) -> dict[str, set[str]]:
        seen: dict[str, set[str]] = {}
        for r in self.requests:
            if r.api_version:
                seen.setdefault(r.route, set()).add(r.api_version)
        return seen

    def job(self, name: str) -> Job:
        with self.state.lock:
            return self.state.jobs[name]

    def advance_job(self, name: str, *, to: str | None = None) -> Job:
        return self.state.advance_job(name, to=to)

    def set_job_outcome(self, name: str, status: str, message: str = "") -> None:
        self.state.set_job_outcome(name, status, message)

    def blobs(self) -> dict[str, Blob]:
        """Stored blobs by "container/path"."""
        with self.state.lock:
            return dict(self.state.blobs)

    def issue_token(self) -> str:
        """A bearer token ARM routes accept, for tests that bring their own credential."""
        return self.state.issue_token({"issued": "by test"})

    # --- HTTP ---------------------------------------------------------------
    def _host_kind(self, host: str) -> tuple[str, dict[str, str]]:
        host = host.rsplit(":", 1)[0] if not host.startswith("[") else host
        for kind, pattern in self._host_re.items():
            if match := pattern.match(host.lower()):
                return kind, match.groupdict()
        return "arm", {}

    def _match(self, call: Call, kind: str) -> Route | None:
        for candidate in ROUTES:
            match = candidate.pattern.match(call.path)
            if candidate.host == kind and candidate.method == call.method and match:
                call.params.update(match.groupdict())
                return candidate
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        call = Call(
            method=request.method,
            host=request.host,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            base_url=self.base_url,
        )
        kind, host_params = self._host_kind(request.host)
        call.params.update(host_params)
        matched = self._match(call, kind)
        name = matched.name if matched else ""
        fault = self.faults.take(name) if matched else None
        reply = self._answer(matched, call, fault)
        self._record(call, name, 0 if reply is None else reply.status)
        if reply is None:
            _reset(request)
            raise asyncio.CancelledError  # nothing more to send on a reset connection
        return _response(reply, head=request.method == "HEAD")

    def _answer(self, matched: Route | None, call: Call, fault: Fault | None) -> Reply | None:
        if matched is None:
            return error(404, "NoRoute", f"fake: no route for {call.method} {call.path}")
        if fault is not None and not fault.after:
            return _fault_reply(fault)
        if matched.name not in ANONYMOUS and matched.host == "arm" and not self._authorized(call):
            reply = error(
                401, "InvalidAuthenticationToken", "The access token is missing or invalid."
            )
            reply.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return reply
        with self.state.lock:
            reply = matched.handler(self.state, call)
        if fault is not None:  # after=True: the request took effect, the answer is lost
            return _fault_reply(fault)
        reply.headers.setdefault("x-ms-request-id", str(uuid.uuid4()))
        return reply

    def _authorized(self, call: Call) -> bool:
        scheme, _, token = call.headers.get("authorization", "").partition(" ")
        with self.state.lock:
            return scheme.lower() == "bearer" and token in self.state.tokens

    def _record(self, call: Call, route: str, status: int) -> None:
        rec = Recorded(
            route, call.method, call.host, call.path, call.query, call.headers, call.body, status
        )
        log.debug(
            "azure fake route=%s method=%s path=%s api_version=%s status=%s",
            route or "-",
            call.method,
            call.path,
            rec.api_version,
            status,
        )
        with self._records_lock:
            self._records.append(rec)

    # --- CONNECT proxy ------------------------------------------------------
    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tunnels.add(task)
        task.add_done_callback(self._tunnels.discard)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            host = target.rsplit(":", 1)[0].lower()
            if method != "CONNECT" or not host.endswith("." + self.suffix):
                self.refused.append(f"{method} {target}")
                log.warning("azure fake proxy refused method=%s target=%s", method, target)
                writer.write(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def _fault_reply(fault: Fault) -> Reply | None:
    if fault.status == RESET:
        return None
    headers = {"x-ms-request-id": str(uuid.uuid4())}
    if fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)
    return Reply(fault.status, fault.body(), headers)


def _reset(request: web.Request) -> None:
    """Close with a TCP RST (SO_LINGER 0), which clients see as 'connection reset by peer'."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _response(reply: Reply, *, head: bool) -> web.Response:
    headers = dict(reply.headers)
    body: bytes | None
    if isinstance(reply.body, (dict, list)):
        body = json.dumps(reply.body).encode()
        headers.setdefault("Content-Type", "application/json; charset=utf-8")
    else:
        body = reply.body
    response = (
        web.Response(status=reply.status, headers=headers)
        if head
        else web.Response(status=reply.status, body=body or b"", headers=headers)
    )
    # One request per connection: clients then close their sockets as each response ends,
    # instead of leaving pooled ones for the garbage collector (a ResourceWarning, which
    # the tests treat as an error, from SDK sessions nobody can close).
    response.force_close()
    return response


@contextlib.contextmanager
def running(tls: TlsFiles, **kwargs: Any) -> Iterator[AzureFake]:
    """A started fake, stopped (ports closed, thread joined) on exit."""
    fake = AzureFake(tls, **kwargs)
    try:
        yield fake.start()
    finally:
        fake.stop()
