"""The progress channel (docs/progress-reports.md): bearer token, throttling, never fatal."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kubetune.api.finetunejob import Metrics, Progress
from kubetune.trainer.progress import Reporter, build_report


class Receiver(ThreadingHTTPServer):
    """A local stand-in for the operator's report endpoint."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[tuple[float, str, str | None, dict[str, object]]] = []
        self.status = 200
        self.delay = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/namespaces/ns/finetunejobs/j/report"


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(self.server.delay)
        auth = self.headers.get("Authorization")
        self.server.requests.append((time.monotonic(), self.path, auth, body))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def token(tmp_path):
    path = tmp_path / "token"
    path.write_text("first-token\n")
    return path


def progress(step: int) -> Progress:
    return Progress(epoch=step / 10, step=step, total_steps=10, train_loss=1.0 / step)


def test_report_body_uses_the_api_names():
    body = build_report(progress(2), Metrics(validation_loss=1.5, token_accuracy=0.5))
    assert body == {
        "progress": {"epoch": 0.2, "step": 2, "totalSteps": 10, "trainLoss": 0.5},
        "metrics": {"validationLoss": 1.5, "tokenAccuracy": 0.5},
    }


def test_reports_carry_the_bearer_token_and_are_throttled(receiver, token):
    reporter = Reporter(receiver.url, str(token), interval=0.5)
    started = time.monotonic()
    for step in range(1, 31):  # 1.5 s of updates, one every 50 ms
        reporter.update(progress(step))
        if step == 15:
            token.write_text("rotated-token")  # the kubelet rotates it
        time.sleep(0.05)
    reporter.update(progress(30), Metrics(train_loss=0.1))
    reporter.close()
    # ~1.5 s / 0.5 s, plus the final one (31 updates). Bounded by their count, not by
    # each gap between arrivals, which carries the receiver thread's scheduling delay.
    assert 3 <= len(receiver.requests) <= 5
    assert {path for _, path, _, _ in receiver.requests} == {
        "/v1/namespaces/ns/finetunejobs/j/report"
    }
    auths = [auth for _, _, auth, _ in receiver.requests]
    assert auths[0] == "Bearer first-token"
    assert auths[-1] == "Bearer rotated-token"
    last = receiver.requests[-1][3]
    assert last == {
        "progress": {
            "epoch": 3.0,
            "step": 30,
            "totalSteps": 10,
            "trainLoss": pytest.approx(1 / 30),
        },
        "metrics": {"trainLoss": 0.1},
    }
    # Updates are dropped, not queued: what was sent is the latest at each moment.
    steps = [body["progress"]["step"] for *_, body in receiver.requests]
    assert steps == sorted(steps)
    assert time.monotonic() - started < 3


def test_update_never_blocks_on_a_slow_operator(receiver, token):
    receiver.delay = 1.0
    reporter = Reporter(receiver.url, str(token), interval=0.1, timeout=5)
    started = time.monotonic()
    for step in range(1, 21):
        reporter.update(progress(step))
    assert time.monotonic() - started < 0.2
    reporter.close(wait=0.1)


def test_unreachable_operator_is_ignored(token):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connection refused
    reporter = Reporter(f"http://127.0.0.1:{port}/report", str(token), interval=0.05)
    for step in range(1, 6):
        reporter.update(progress(step))
        time.sleep(0.06)
    reporter.close()
    assert reporter.sent == 0


def test_gone_job_stops_reports(receiver, token):
    receiver.status = 404
    reporter = Reporter(receiver.url, str(token), interval=0.05)
    for step in range(1, 6):
        reporter.update(progress(step))
        time.sleep(0.1)
    reporter.close()
    assert len(receiver.requests) == 1


def test_refusals_do_not_stop_reports(receiver, tmp_path, caplog):
    receiver.status = 401
    reporter = Reporter(receiver.url, str(tmp_path / "missing-token"), interval=0.05)
    for step in range(1, 4):
        reporter.update(progress(step))
        time.sleep(0.1)
    reporter.close()
    assert len(receiver.requests) == 3
    assert all(auth is None for _, _, auth, _ in receiver.requests)
    assert sum("status=401" in r.message for r in caplog.records) == 1


def test_no_url_no_thread():
    reporter = Reporter(None, None)
    reporter.update(progress(1))
    reporter.close()
    assert reporter.sent == 0
