"""Progress and metrics pushed to the operator (docs/progress-reports.md), never blocking.

`Reporter.update()` only records the latest report; a daemon thread sends it,
at most one POST every `interval` seconds, so training never waits on the
network. A report that cannot be sent is dropped, not queued: a newer one
replaces it. The bearer token is re-read from `token_path` before every POST
(the kubelet rotates it, which is also the documented answer to a 401).
Answers: 2xx carry on; 404 (the FineTuneJob is gone) stops reporting; other
4xx are logged once per status; connection errors and timeouts are logged at
debug level. `close()` sends the last pending report (still respecting the
interval) and gives up after a bounded wait.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from kubetune.api.finetunejob import Metrics, Progress

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0
"""Seconds between two POSTs (Kubeflow Trainer uses 5 s too)."""
TIMEOUT = 5.0


def build_report(progress: Progress | None, metrics: Metrics | None) -> dict[str, object]:
    """The JSON body: `{"progress": {...}, "metrics": {...}}` in the API's camelCase."""
    body: dict[str, object] = {}
    if progress is not None:
        body["progress"] = progress.model_dump(mode="json", by_alias=True, exclude_none=True)
    if metrics is not None:
        body["metrics"] = metrics.model_dump(mode="json", by_alias=True, exclude_none=True)
    return body


class Reporter:
    """Sends the latest report in the background; a no-op without a URL."""

    def __init__(
        self,
        url: str | None,
        token_path: str | None,
        *,
        interval: float = DEFAULT_INTERVAL,
        timeout: float = TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.token_path = Path(token_path) if token_path else None
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.sent = 0
        self._pending: dict[str, object] | None = None
        self._last_post = -float("inf")
        self._stopped = False  # 404: the job is gone
        self._closing = False
        self._logged: set[int] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        if url:
            self._thread = threading.Thread(target=self._run, name="progress-reporter", daemon=True)
            self._thread.start()

    def update(self, progress: Progress | None = None, metrics: Metrics | None = None) -> None:
        """Replaces the pending report; returns at once."""
        if self._thread is None:
            return
        with self._cond:
            self._pending = build_report(progress, metrics)
            self._cond.notify()

    def close(self, wait: float | None = None) -> None:
        """Sends what is pending (waiting out the interval) and stops the thread."""
        if self._thread is None:
            return
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(self.interval + self.timeout + 1 if wait is None else wait)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closing:
                    self._cond.wait()
                if self._pending is None or self._stopped:
                    return
                delay = self._last_post + self.interval - self.clock()
                if delay > 0:
                    # Woken early by a newer update or close(): re-check.
                    self._cond.wait(delay)
                    continue
                body, self._pending = self._pending, None
                self._last_post = self.clock()
            self._post(body)

    def _post(self, body: dict[str, object]) -> None:
        assert self.url is not None
        headers = {"Content-Type": "application/json"}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
            self.sent += 1
        except urllib.error.HTTPError as e:
            e.close()  # it holds the connection
            self._answered(e.code)
        except (urllib.error.URLError, OSError, ValueError) as e:
            log.debug("progress report not sent url=%s error=%s", self.url, e)

    def _answered(self, status: int) -> None:
        if status == 404:
            log.warning("progress reports stopped: the FineTuneJob is gone status=404")
            with self._cond:
                self._stopped = True
                self._pending = None
        elif status not in self._logged:
            self._logged.add(status)
            log.warning("progress report refused status=%d (later refusals not logged)", status)

    def _token(self) -> str | None:
        if self.token_path is None:
            return None
        try:
            return self.token_path.read_text().strip() or None
        except OSError as e:
            log.debug("no progress token path=%s error=%s", self.token_path, e)
            return None
