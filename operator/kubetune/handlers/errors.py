"""The one place where kubetune's errors become Kopf's, or our work queue's (see
kubetune/errors.py)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Iterator

import kopf

from kubetune.errors import BackendRejected, BackendUnavailable, InvalidSpec, NotReady

log = logging.getLogger(__name__)

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


async def queued(work: Awaitable[None], what: str) -> float | None:
    """Run work queued outside Kopf (workqueue.py) with the same meaning: the seconds
    after which to try again for a temporary error, None when done or failed for good
    (the status says why; a spec change tries again). Anything else propagates, and the
    queue retries it after RETRY_BACKOFF."""
    try:
        await work
    except (NotReady, BackendUnavailable) as e:
        log.info("%s: %s (again in %.0f s)", what, e, e.retry_after)
        return e.retry_after
    except (InvalidSpec, BackendRejected) as e:
        log.error("%s: %s", what, e)
    return None
