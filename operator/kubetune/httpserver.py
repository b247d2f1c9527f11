"""The operator's HTTP endpoint: `/healthz` for the liveness probe, `/metrics` for
Prometheus, and the trainers' report endpoint (see reports.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubetune.metrics import REPORTS
from kubetune.reports import ReportSink

MAX_REPORT_BYTES = 64 * 1024


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _report_handler(sink: ReportSink) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def report(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        outcome = await sink.accept(
            request.match_info["namespace"], request.match_info["name"], token, await request.read()
        )
        REPORTS.labels(str(outcome.status)).inc()
        return web.json_response({"message": outcome.message}, status=outcome.status)

    return report


def build_app(sink: ReportSink | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_REPORT_BYTES)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    if sink is not None:
        app.router.add_post(
            "/v1/namespaces/{namespace}/finetunejobs/{name}/report", _report_handler(sink)
        )
    return app


async def start_server(host: str, port: int, sink: ReportSink | None = None) -> web.AppRunner:
    """Start serving; the caller stops it with `await runner.cleanup()`."""
    runner = web.AppRunner(build_app(sink), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
