"""Azure Blob Storage, as much of it as the SDK's content-addressed uploads use.

The SDK uploads a local file to `LocalUpload/<hash>/<file name>` in the workspace's
default container: HEAD (404 means "not there yet"), PUT the bytes (or PUT blocks and a
block list for big files), then `PUT ?comp=metadata` with `upload_status=completed`; a
later upload of the same content finds that metadata on HEAD and skips the PUT. Every
request must carry the SAS the datastore's listSecrets handed out. Bytes and metadata
stay in `AzureState.blobs`, keyed "container/path", for tests to read.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import re
import time
import uuid

from tests.azurefake.state import AzureState, Blob
from tests.azurefake.wire import Call, Reply, Route, route

BLOB = "/(?P<container>[^/]+)/(?P<blob>.+)"
_RANGE = re.compile(r"^bytes=(?P<start>\d+)-(?P<end>\d*)$")
_BLOCK_ID = re.compile(r"<(?:Latest|Committed|Uncommitted)>([^<]+)</")


def _storage_error(status: int, code: str, message: str, *, head: bool = False) -> Reply:
    body = (
        f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
        f"<Message>{message}\nRequestId:{uuid.uuid4()}</Message></Error>"
    ).encode()
    headers = {"x-ms-error-code": code, "Content-Type": "application/xml"}
    return Reply(status, None if head else body, headers)


def _common() -> dict[str, str]:
    return {
        "x-ms-request-id": str(uuid.uuid4()),
        "x-ms-version": "2025-01-05",
        "Date": email.utils.formatdate(time.time(), usegmt=True),
    }


def _authorized(state: AzureState, call: Call) -> bool:
    expected = dict(p.split("=", 1) for p in state.workspace.sas_token.split("&"))
    return call.query.get("sig") == expected["sig"]


def _key(call: Call) -> str:
    return f"{call.params['container']}/{call.params['blob']}"


def _metadata(call: Call) -> dict[str, str]:
    return {
        k[len("x-ms-meta-") :]: v for k, v in call.headers.items() if k.startswith("x-ms-meta-")
    }


def _properties(blob: Blob) -> dict[str, str]:
    headers = {
        **_common(),
        "Content-Length": str(len(blob.data)),
        "Content-Type": blob.content_type,
        "ETag": blob.etag,
        "Last-Modified": email.utils.formatdate(time.time(), usegmt=True),
        "x-ms-blob-type": "BlockBlob",
        "x-ms-lease-state": "available",
        "x-ms-lease-status": "unlocked",
        "x-ms-server-encrypted": "true",
        "Accept-Ranges": "bytes",
    }
    headers.update({f"x-ms-meta-{k}": v for k, v in blob.metadata.items()})
    return headers


def _head(state: AzureState, call: Call) -> Reply:
    if not _authorized(state, call):
        return _storage_error(403, "AuthenticationFailed", "Bad SAS signature.", head=True)
    blob = state.blobs.get(_key(call))
    if blob is None:
        return _storage_error(404, "BlobNotFound", "The specified blob does not exist.", head=True)
    return Reply(200, None, _properties(blob))


def _get(state: AzureState, call: Call) -> Reply:
    if not _authorized(state, call):
        return _storage_error(403, "AuthenticationFailed", "Bad SAS signature.")
    blob = state.blobs.get(_key(call))
    if blob is None:
        return _storage_error(404, "BlobNotFound", "The specified blob does not exist.")
    wanted = _RANGE.match(call.headers.get("x-ms-range") or call.headers.get("range") or "")
    if not wanted:
        return Reply(200, blob.data, _properties(blob))
    start = int(wanted["start"])
    end = min(int(wanted["end"] or len(blob.data) - 1), len(blob.data) - 1)
    headers = _properties(blob)
    headers.update(
        {
            "Content-Length": str(max(end - start + 1, 0)),
            "Content-Range": f"bytes {start}-{end}/{len(blob.data)}",
        }
    )
    return Reply(206, blob.data[start : end + 1], headers)


def _written(blob: Blob, status: int = 201) -> Reply:
    md5 = base64.b64encode(hashlib.md5(blob.data, usedforsecurity=False).digest()).decode()
    headers = {
        **_common(),
        "ETag": blob.etag,
        "Last-Modified": email.utils.formatdate(time.time(), usegmt=True),
        "Content-MD5": md5,
        "x-ms-request-server-encrypted": "true",
    }
    return Reply(status, None, headers)


def _put(state: AzureState, call: Call) -> Reply:
    if not _authorized(state, call):
        return _storage_error(403, "AuthenticationFailed", "Bad SAS signature.")
    key, comp = _key(call), call.query.get("comp", "")
    blob = state.blobs.get(key)
    if comp == "metadata":
        if blob is None:
            return _storage_error(404, "BlobNotFound", "The specified blob does not exist.")
        blob.metadata = _metadata(call)
        return _written(blob, 200)
    if comp == "block":
        state.blocks[(key, call.query["blockid"])] = call.body
        return Reply(201, None, _common())
    if call.headers.get("if-none-match") == "*" and blob is not None:
        return _storage_error(409, "BlobAlreadyExists", "The specified blob already exists.")
    if comp == "blocklist":
        ids = _BLOCK_ID.findall(call.body.decode())
        data = b"".join(state.blocks.pop((key, i)) for i in ids)
    elif comp == "":
        data = call.body
    else:
        return _storage_error(400, "UnsupportedQueryParameter", f"comp={comp} is not faked.")
    content_type = call.headers.get("x-ms-blob-content-type", "application/octet-stream")
    blob = state.blobs[key] = Blob(data, _metadata(call), content_type)
    return _written(blob)


ROUTES: tuple[Route, ...] = (
    route("blob.head", "HEAD", "blob", BLOB, _head),
    route("blob.get", "GET", "blob", BLOB, _get),
    route("blob.put", "PUT", "blob", BLOB, _put),
)
