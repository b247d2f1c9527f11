"""The one place where kubetune's errors become Kopf's (see kubetune/errors.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import kopf

from kubetune.errors import BackendRejected, BackendUnavailable, InvalidSpec, NotReady

# Seconds before Kopf retries a handler that failed unexpectedly (an API hiccup, a
# conflict): Kopf's default, 60 s, would leave a resource visibly stuck.
RETRY_BACKOFF = 5.0


@contextlib.contextmanager
def kopf_errors() -> Iterator[None]:
    try:
        yield
    except (InvalidSpec, BackendRejected) as e:
        raise kopf.PermanentError(str(e)) from e
    except (NotReady, BackendUnavailable) as e:
        raise kopf.TemporaryError(str(e), delay=e.retry_after) from e
