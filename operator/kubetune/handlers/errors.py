"""The one place where kubetune's errors become Kopf's (see kubetune/errors.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import kopf

from kubetune.errors import BackendRejected, BackendUnavailable, InvalidSpec, NotReady


@contextlib.contextmanager
def kopf_errors() -> Iterator[None]:
    try:
        yield
    except (InvalidSpec, BackendRejected) as e:
        raise kopf.PermanentError(str(e)) from e
    except (NotReady, BackendUnavailable) as e:
        raise kopf.TemporaryError(str(e), delay=e.retry_after) from e
