"""Faults the Azure fake can inject, per route, for the next N requests or for good.

A fault replaces the route's answer with an Azure-shaped error (`{"error": {"code",
"message"}}`, plus `Retry-After` for throttling) or drops the connection with a TCP
reset. `after=True` lets the request take effect first and then loses the response,
which is how a test makes "Azure did it, but we never heard back" happen.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

RESET = 0  # Fault.status for "reset the connection instead of answering"


@dataclass(frozen=True)
class Fault:
    status: int
    code: str = ""
    message: str = ""
    retry_after: int | None = None
    after: bool = False

    @classmethod
    def throttle(cls, retry_after: int = 7) -> Fault:
        return cls(
            429,
            "TooManyRequests",
            "The request is being throttled as the limit has been reached for operation type.",
            retry_after=retry_after,
        )

    @classmethod
    def server_error(cls, status: int = 500, *, retry_after: int | None = None) -> Fault:
        code = {500: "InternalServerError", 503: "ServiceUnavailable"}.get(status, "ServerError")
        return cls(status, code, f"Fake Azure failure {status}.", retry_after=retry_after)

    @classmethod
    def reset(cls, *, after: bool = False) -> Fault:
        return cls(RESET, after=after)

    @classmethod
    def unauthorized(cls) -> Fault:
        return cls(
            401,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        )

    @classmethod
    def forbidden(
        cls, action: str = "Microsoft.MachineLearningServices/workspaces/jobs/write"
    ) -> Fault:
        return cls(
            403,
            "AuthorizationFailed",
            "The client 'fake-client' with object id '00000000-0000-0000-0000-00000000f00d' "
            f"does not have authorization to perform action '{action}' over scope "
            "'/subscriptions/fake' or the scope is invalid. If access was recently granted, "
            "please refresh your credentials.",
        )

    @classmethod
    def not_found(cls) -> Fault:
        return cls(404, "ResourceNotFound", "The resource was not found (injected).")

    def body(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message}}


@dataclass
class _Armed:
    route: str
    fault: Fault
    remaining: int | None  # None: forever


class FaultTable:
    """Thread-safe: tests arm faults from their thread, the server takes them from its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[_Armed] = []

    def add(self, route: str, fault: Fault, times: int | None = 1) -> None:
        with self._lock:
            self._armed.append(_Armed(route, fault, times))

    def clear(self, route: str | None = None) -> None:
        with self._lock:
            self._armed = [a for a in self._armed if route is not None and a.route != route]

    def take(self, route: str) -> Fault | None:
        """The first fault armed for `route` (or for "*"), used up by one request."""
        with self._lock:
            for armed in self._armed:
                if armed.route in (route, "*"):
                    if armed.remaining is not None:
                        armed.remaining -= 1
                        if armed.remaining <= 0:
                            self._armed.remove(armed)
                    return armed.fault
        return None
