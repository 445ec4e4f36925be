"""Domain errors. Each carries its HTTP status and public code; `web` maps them to responses once."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status = 500
    code = "internal_error"
    retry_after: int | None = None  # seconds, for the Retry-After header of an error worth retrying

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Invalid(AppError):
    status = 400
    code = "validation_error"


class InvalidCursor(Invalid):
    code = "invalid_cursor"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"


class Forbidden(AppError):
    status = 403
    code = "forbidden"


class OriginNotAllowed(Forbidden):
    code = "origin_not_allowed"


class NotFound(AppError):
    status = 404
    code = "not_found"


class MethodNotAllowed(AppError):
    status = 405
    code = "method_not_allowed"


class Conflict(AppError):
    status = 409
    code = "conflict"


class Contention(Conflict):
    code = "concurrent_update"


class QuotaExceeded(Conflict):
    code = "quota_exceeded"


class PreconditionFailed(AppError):
    status = 412
    code = "precondition_failed"


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"


class Unprocessable(AppError):
    status = 422
    code = "unprocessable"


class Retryable(AppError):
    """An error the caller may retry after `retry_after` seconds (at least 1), sent as Retry-After."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class RateLimited(Retryable):
    status = 429
    code = "rate_limited"


class Unavailable(Retryable):
    """The service cannot take the request now (the database is over its capacity): retry after a moment."""

    status = 503
    code = "unavailable"
