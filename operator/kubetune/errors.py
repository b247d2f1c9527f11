"""kubetune's error tree, mapped to Kopf's errors (or our work queue's retries) in one
place: handlers/errors.py.

    KubetuneError
    ├─ InvalidSpec                        -> kopf.PermanentError
    ├─ NotReady(retry_after)              -> kopf.TemporaryError(delay=retry_after)
    └─ BackendError
       ├─ BackendUnavailable(retry_after) -> kopf.TemporaryError(delay=retry_after)
       └─ BackendRejected                 -> kopf.PermanentError

Anything else propagates, and Kopf (or the work queue) retries it with backoff.
"""

from __future__ import annotations


class KubetuneError(Exception):
    """Base of every error kubetune raises on purpose."""


class InvalidSpec(KubetuneError):
    """The resource's spec cannot be acted on; retrying will not help."""


class NotReady(KubetuneError):
    """Something the resource depends on is not there yet."""

    def __init__(self, message: str, *, retry_after: float = 10.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackendError(KubetuneError):
    """A training or serving backend failed."""


class BackendUnavailable(BackendError):
    """The backend could not be reached or asked us to come back later."""

    def __init__(self, message: str, *, retry_after: float = 30.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackendRejected(BackendError):
    """The backend refused the request for good."""
