"""The fake's request/response types and its route table entry, shared by every route module."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from tests.azurefake.state import AzureState


@dataclass
class Call:
    """One request as a handler sees it (headers with lower-case names)."""

    method: str
    host: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    base_url: str  # https://127.0.0.1:PORT, for Location headers and discovery
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode()))


@dataclass
class Reply:
    status: int
    body: Any = None  # dict/list -> JSON; bytes as they are; None -> empty
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[["AzureState", Call], Reply]


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    host: str  # "arm" (ARM, identity, discovery, run history), "blob" or "inference"
    pattern: re.Pattern[str]
    handler: Handler


def route(name: str, method: str, host: str, path: str, handler: Handler) -> Route:
    return Route(name, method, host, re.compile(f"^{path}/?$", re.IGNORECASE), handler)


def error(status: int, code: str, message: str) -> Reply:
    """Azure's ARM error body."""
    return Reply(status, {"error": {"code": code, "message": message}})


def not_found(kind: str, name: str) -> Reply:
    return error(404, "ResourceNotFound", f"The {kind} '{name}' could not be found.")
