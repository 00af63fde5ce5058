"""Domain errors raised by services.

Exactly one place (``web/errors.py``) maps them to HTTP statuses and the
``{"error", "message", ...}`` body; services never think in status codes.
Each class carries its wire ``code`` and any extra body fields in ``extra``.
"""

from __future__ import annotations

from typing import Any


class WarrantySyncError(Exception):
    code = "error"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class NotAuthenticated(WarrantySyncError):
    code = "not_authenticated"


class InvalidCredentials(WarrantySyncError):
    code = "invalid_credentials"


class Forbidden(WarrantySyncError):
    code = "forbidden"


class CsrfFailed(Forbidden):
    code = "csrf_failed"


class NotFound(WarrantySyncError):
    code = "not_found"


class CaseNotFound(NotFound):
    pass


class ValidationFailed(WarrantySyncError):
    """A field broke a rule; ``extra`` names ``field`` and ``rule``."""

    code = "validation_error"


class InvalidJson(WarrantySyncError):
    code = "invalid_json"


class UnsupportedMediaType(WarrantySyncError):
    code = "unsupported_media_type"


class PayloadTooLarge(WarrantySyncError):
    code = "payload_too_large"


class RequestTimeout(WarrantySyncError):
    """The request did not arrive in time (warrantysync/httpguard.py)."""

    code = "request_timeout"


class IdempotencyKeyReused(WarrantySyncError):
    code = "idempotency_key_reused"


class LockConflict(WarrantySyncError):
    """Someone else holds the lock; ``extra["lock"]`` is the holder's lock (no token)."""

    code = "locked"


class LockLost(WarrantySyncError):
    code = "lock_lost"


class LockBarred(WarrantySyncError):
    """A manager released the caller's lock on ``field``; their user may retake it at ``until``."""

    code = "lock_barred"

    def __init__(self, message: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after = max(1, retry_after)


class StreamRequired(WarrantySyncError):
    """A renewal refused: the lock's client has had no open stream for too long.

    ``extra["lock"]`` is the caller's own lock, unchanged (it lives until it expires).
    """

    code = "stream_required"


class LockGone(WarrantySyncError):
    """The lock a request was about is no longer held by the one asked (released, expired)."""

    code = "lock_gone"


class RequestPending(WarrantySyncError):
    """Someone already asks for this field; ``extra["request"]`` is that request."""

    code = "lock_request_pending"


class StaleVersion(WarrantySyncError):
    """An ``expected`` value differed; ``extra`` has ``current`` and ``by``."""

    code = "conflict"


class RateLimited(WarrantySyncError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after = max(1, retry_after)


class TooManyStreams(RateLimited):
    code = "too_many_streams"


class TooManyLocks(RateLimited):
    """The user holds the most locks one user may hold; ``extra["limit"]`` is that cap."""

    code = "too_many_locks"


class Unavailable(WarrantySyncError):
    """A dependency (database, Redis) cannot be reached right now."""

    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 2, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after
