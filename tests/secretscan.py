"""No secret value in any status, event or log line: an autouse fixture for the whole suite.

Secret values come from three places:

- `remember(value)`: what a test hands out itself (tests/kube.py's `pod_token`, the
  bearer token a trainer presents, does it);
- the Secrets in a cluster test's namespace (their decoded data: HF tokens, service
  principals, endpoint keys), read at the end of the test;
- the Azure fake of a test that uses one: its service principals' client secrets, the
  access tokens it issued and its endpoints' keys.

At the end of each test, `no_leaked_secrets` looks for them in

- the status of every FineTuneJob, FineTunedModel and ModelDeployment and every Event
  in a cluster test's namespace (one `kubectl get` for all of these and the Secrets:
  one LIST per kind),
- every `*.log` file under the test's `tmp_path` (where tests keep the operator's, the
  server's and the trainer's logs),
- every log record emitted in this process during the test, at the levels enabled.

Values shorter than MIN_LENGTH are ignored: a Secret holding "true" or a region name
would match everywhere. A hit fails the test at teardown, naming where and a masked value.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

MIN_LENGTH = 8
KINDS = ("finetunejobs", "finetunedmodels", "modeldeployments")
_REMEMBERED: set[str] = set()


def remember(*values: str) -> None:
    """Register values that must never appear in a status, an event or a log line."""
    _REMEMBERED.update(v for v in values if len(v) >= MIN_LENGTH)


def remembered() -> frozenset[str]:
    return frozenset(_REMEMBERED)


def mask(value: str) -> str:
    return f"{value[:3]}…({len(value)} chars)"


def is_identifier(key: str) -> bool:
    """Keys of a Secret that name someone rather than prove it (AZURE_CLIENT_ID,
    AZURE_TENANT_ID, a subscription): logs may show those."""
    lowered = key.lower()
    return lowered.endswith("id") or any(
        word in lowered for word in ("tenant", "subscription", "username", "region")
    )


def secret_values(secret: Mapping[str, Any]) -> set[str]:
    """The decoded data values of a Secret object (and each of their lines), except
    identifiers (see is_identifier)."""
    found: set[str] = set()
    for key, encoded in (secret.get("data") or {}).items():
        if is_identifier(key):
            continue
        try:
            value = base64.b64decode(encoded).decode()
        except (binascii.Error, UnicodeDecodeError):
            continue
        found.update(v.strip() for v in [value, *value.splitlines()])
    return {v for v in found if len(v) >= MIN_LENGTH}


def find_leaks(texts: Mapping[str, str], secrets: Iterable[str]) -> list[str]:
    """`where: masked value` for each secret found in each text."""
    wanted = [s for s in set(secrets) if len(s) >= MIN_LENGTH]
    return [f"{where}: {mask(s)}" for where, text in texts.items() for s in wanted if s in text]


def cluster_texts(objects: Iterable[Mapping[str, Any]]) -> tuple[dict[str, str], set[str]]:
    """What to scan (statuses and events, by where they are) and the Secrets' values."""
    texts: dict[str, str] = {}
    secrets: set[str] = set()
    for obj in objects:
        kind, name = obj.get("kind", "?"), obj.get("metadata", {}).get("name", "?")
        if kind == "Secret":
            secrets |= secret_values(obj)
        elif kind == "Event":
            involved = obj.get("involvedObject") or {}
            where = f"event {obj.get('reason')} on {involved.get('kind')}/{involved.get('name')}"
            texts[f"{where} ({name})"] = " ".join(
                str(obj.get(k) or "") for k in ("reason", "message", "note")
            )
        elif "status" in obj:
            texts[f"{kind}/{name} status"] = json.dumps(obj["status"])
    return texts, secrets


def list_namespace(kubectl: Any, namespace: str) -> list[dict[str, Any]] | None:
    """One `kubectl get` of the kubetune kinds, Events and Secrets; None if it failed."""
    done: subprocess.CompletedProcess[str] = kubectl(
        "get", ",".join((*KINDS, "events", "secrets")), "-n", namespace, "-o", "json", check=False
    )
    if done.returncode != 0:
        return None
    items: list[dict[str, Any]] = json.loads(done.stdout)["items"]
    return items


def log_files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text(errors="replace")
        for p in sorted(root.rglob("*.log"))
        if p.is_file()
    }


def azure_secrets(fake: Any) -> set[str]:
    """Client secrets, issued access tokens and endpoint keys of an Azure fake."""
    state = fake.state
    with state.lock:
        found = {*state.client_secrets.values(), *state.tokens}
        for endpoint in state.endpoints.values():
            found.update(getattr(endpoint, "keys", ()))
    return {v for v in found if isinstance(v, str) and len(v) >= MIN_LENGTH}


class _Records(logging.Handler):
    """Keeps the formatted log records of one test."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(f"{record.name}: {record.getMessage()}")
        except (TypeError, ValueError):  # a record with broken arguments
            self.lines.append(f"{record.name}: {record.msg}")


@pytest.fixture(autouse=True)
def no_leaked_secrets(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the test (at teardown) if a secret value appears in a status, an event or a log."""
    names = set(request.fixturenames)
    in_cluster = {"cluster", "namespace"} <= names
    cluster = request.getfixturevalue("cluster") if in_cluster else None
    namespace = request.getfixturevalue("namespace") if in_cluster else None
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in names else None
    fake = request.getfixturevalue("azure_fake") if "azure_fake" in names else None
    records = _Records()
    root = logging.getLogger()
    root.addHandler(records)
    try:
        yield
    finally:
        root.removeHandler(records)
    secrets = set(remembered())
    texts: dict[str, str] = {}
    if fake is not None:
        secrets |= azure_secrets(fake)
    if cluster is not None and namespace is not None:
        objects = list_namespace(cluster.kubectl, namespace)
        if objects is not None:
            found, values = cluster_texts(objects)
            texts.update(found)
            secrets |= values
    if not secrets:
        return
    texts.update({f"log record {i}": line for i, line in enumerate(records.lines)})
    if tmp is not None:
        texts.update({f"log file {name}": text for name, text in log_files(tmp).items()})
    leaks = find_leaks(texts, secrets)
    if leaks:
        pytest.fail("secret values leaked:\n  " + "\n  ".join(leaks[:20]), pytrace=False)
