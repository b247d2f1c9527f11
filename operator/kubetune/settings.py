"""Operator run options, from `kubetune run` flags (and their KUBETUNE_* environment defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


@dataclass(frozen=True)
class RunOptions:
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty watches the whole cluster."""
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    """Port of /healthz and /metrics; 0 picks a free one."""
    peering: str | None = None
    """Kopf peering name for several replicas; None runs standalone."""
    log_format: LogFormat = LogFormat.TEXT
    verbose: bool = False
