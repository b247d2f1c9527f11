"""Training data for Foundry jobs: read from where the spec says, checked, staged for upload.

The operator reads the data itself (Azure needs files to upload), checks it with the
validator the trainer and `kubetune validate-data` use, splits off a validation set when
none is given (the SDK cannot submit without one), and writes both files under stable
names: the SDK uploads them to a path made of their content's hash and the file name,
so a retry finds them uploaded and sends nothing again.

Sources: a ConfigMap key, an http(s) URL, or an Azure blob (with a SAS token from a
Secret, or the operator's Azure identity). A PVC cannot be read by the operator; the
CRD refuses it for backend foundry.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from kubetune import datavalidation as dv
from kubetune.api.common import AzureBlobSource, DataSource
from kubetune.errors import InvalidSpec, NotReady
from kubetune.k8s import Kube, path

MAX_PROBLEMS_SHOWN = 5
TRAINING_FILE = "training.jsonl"
VALIDATION_FILE = "validation.jsonl"
DEFAULT_SPLIT = 0.1
DEFAULT_SEED = 42
URL_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=20)


class InvalidData(InvalidSpec):
    """The data cannot be used as it is: missing, unreadable or failing validation."""


@dataclass(frozen=True)
class StagedData:
    training: Path
    validation: Path
    examples: tuple[int, int]  # (training, validation)


SasReader = Callable[[str, str, str], Awaitable[str]]  # (namespace, secret, key) -> token
BlobReader = Callable[[AzureBlobSource, str | None], Awaitable[bytes]]  # (source, sas) -> data


def describe(source: DataSource) -> str:
    if source.config_map is not None:
        return f"configMap {source.config_map.name}/{source.config_map.key}"
    if source.url is not None:
        return f"url {source.url.split('?')[0]}"  # never show a query: it may hold a SAS
    if source.azure_blob is not None:
        blob = source.azure_blob
        return f"azureBlob {blob.account_url}/{blob.container}/{blob.blob}"
    return "pvc"


async def read_source(
    kube: Kube,
    namespace: str,
    source: DataSource,
    *,
    field: str,
    read_secret: SasReader,
    read_blob: BlobReader,
) -> bytes:
    """The file's bytes. A missing ConfigMap or an unreachable URL is NotReady (it may
    appear); a missing key or an HTTP 4xx is InvalidData naming `field`."""
    where = f"{field} ({describe(source)})"
    if source.config_map is not None:
        ref = source.config_map
        cm = await kube.get(path("v1", "configmaps", namespace, ref.name))
        if cm is None:
            raise NotReady(f"{where}: ConfigMap {ref.name} not found", retry_after=15)
        if ref.key in (cm.get("data") or {}):
            return str(cm["data"][ref.key]).encode()
        if ref.key in (cm.get("binaryData") or {}):
            return base64.b64decode(cm["binaryData"][ref.key])
        raise InvalidData(f"{where}: ConfigMap {ref.name} has no key {ref.key}")
    if source.url is not None:
        return await _download(source.url, where)
    if source.azure_blob is not None:
        ref_ = source.azure_blob.sas_token_secret_ref
        sas = await read_secret(namespace, ref_.name, ref_.key) if ref_ else None
        return await read_blob(source.azure_blob, sas)
    raise InvalidData(f"{where}: backend foundry cannot read data from a PVC")


async def _download(url: str, where: str) -> bytes:
    try:
        async with (
            aiohttp.ClientSession(timeout=URL_TIMEOUT) as session,
            session.get(url) as response,
        ):
            if 400 <= response.status < 500:
                raise InvalidData(f"{where}: HTTP {response.status}")
            if response.status >= 400:
                raise NotReady(f"{where}: HTTP {response.status}", retry_after=30)
            data = await response.content.read(dv.MAX_FILE_BYTES + 1)
    except (TimeoutError, aiohttp.ClientError) as e:
        raise NotReady(f"{where}: cannot download: {e}", retry_after=30) from e
    return data


def _problems(where: str, report: dv.Report) -> list[str]:
    return [
        f"{where}: {p.reason}" if p.line is None else f"{where} line {p.line}: {p.reason}"
        for p in report.problems
    ]


def stage(
    training: bytes,
    validation: bytes | None,
    *,
    names: tuple[str, str],
    split: float | None,
    seed: int | None,
    directory: Path,
) -> StagedData:
    """Validate both files (all problems at once), split when there is no validation file,
    and write them as `training.jsonl` and `validation.jsonl` in `directory`."""
    problems = _problems(names[0], dv.validate_chat_jsonl(training))
    if validation is not None:
        problems += _problems(names[1], dv.validate_chat_jsonl(validation, min_examples=1))
    if problems:
        shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = len(problems) - MAX_PROBLEMS_SHOWN
        raise InvalidData(shown + (f"; and {more} more" if more > 0 else ""))
    train_lines = dv.example_lines(training)
    if validation is None:
        fraction = split or DEFAULT_SPLIT
        train_lines, valid_lines = dv.split_examples(
            train_lines, fraction, DEFAULT_SEED if seed is None else seed
        )
    else:
        valid_lines = dv.example_lines(validation)
    directory.mkdir(parents=True, exist_ok=True)
    files = (directory / TRAINING_FILE, directory / VALIDATION_FILE)
    for file, lines in zip(files, (train_lines, valid_lines), strict=True):
        file.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return StagedData(files[0], files[1], (len(train_lines), len(valid_lines)))
