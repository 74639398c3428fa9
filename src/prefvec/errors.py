"""One exception hierarchy for prefvec.

Every error a user can cause is a :class:`PrefvecError` that also subclasses the matching
built-in (``ValueError``, ``LookupError``, ...), so callers may catch either. Each class carries
the HTTP status the server maps it to and a stable ``code``; the client maps the code back to the
same class (see :func:`error_from_code`).
"""

from __future__ import annotations

from typing import Any, ClassVar


class PrefvecError(Exception):
    """Base class of all prefvec errors.

    Args:
        message: what went wrong, naming the field and the value received.
        problems: every individual problem found in one input (validation gathers them all).
        field: the offending field, when there is exactly one.
    """

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self, message: str, *, problems: list[str] | None = None, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems) if problems else [message]
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body the server returns (OpenAI-style ``{"error": {...}}`` inner part)."""
        return {
            "message": self.message,
            "type": self.code,
            "code": self.code,
            "param": self.field,
            "problems": self.problems,
        }


class ValidationError(PrefvecError, ValueError):
    """An input (request field, config value, uploaded file) is malformed or out of bounds."""

    status_code = 422
    code = "invalid_request_error"


class BadRequestError(ValidationError):
    """A request that is well-formed but cannot be served as asked (400)."""

    status_code = 400
    code = "bad_request"


class FingerprintMismatchError(ValidationError):
    """A vector was made for another base model."""

    code = "fingerprint_mismatch"


class PayloadTooLargeError(ValidationError):
    """An upload or request body exceeds the configured size bound."""

    status_code = 413
    code = "payload_too_large"


class NotFoundError(PrefvecError, LookupError):
    """A named vector, recipe, version or experiment does not exist."""

    status_code = 404
    code = "not_found"


class ConflictError(PrefvecError):
    """The operation conflicts with the current state (e.g. deleting a vector a recipe uses)."""

    status_code = 409
    code = "conflict"


class AuthenticationError(PrefvecError, PermissionError):
    """Missing or wrong API key."""

    status_code = 401
    code = "authentication_error"


class PermissionDeniedError(PrefvecError, PermissionError):
    """The caller is known but not allowed to do this (e.g. operator route without operator key)."""

    status_code = 403
    code = "permission_denied"


class QueueFullError(PrefvecError):
    """The server is at capacity; retry after ``retry_after`` seconds."""

    status_code = 429
    code = "queue_full"

    def __init__(self, message: str, *, retry_after: float = 1.0, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class RequestTimeoutError(PrefvecError, TimeoutError):
    """A request took longer than its time budget."""

    status_code = 504
    code = "timeout"


class RequestBodyTimeoutError(PrefvecError, TimeoutError):
    """The request body stopped arriving (``body_read_timeout_s`` without a byte): 408."""

    status_code = 408
    code = "request_timeout"


class MethodNotAllowedError(BadRequestError):
    """The path exists but not with this method (the response lists the allowed ones)."""

    status_code = 405
    code = "method_not_allowed"


class ClientDisconnectedError(PrefvecError, ConnectionError):
    """The client went away before its response was ready (logged as a client event)."""

    status_code = 499
    code = "client_disconnected"


class IntegrityError(PrefvecError):
    """Stored data failed its integrity check (sha256 mismatch, missing blob)."""

    status_code = 500
    code = "integrity_error"


class ServiceUnavailableError(PrefvecError):
    """The server cannot serve yet (model still loading, or failed to load): 503."""

    status_code = 503
    code = "service_unavailable"


class ServerUnreachableError(PrefvecError, ConnectionError):
    """The prefvec server could not be reached (connection refused, DNS, broken connection)."""

    status_code = 503
    code = "server_unreachable"


class BackendUnavailableError(PrefvecError, ImportError):
    """An optional backend or extra is not installed; the message says what to install."""

    status_code = 501
    code = "backend_unavailable"


def _all_subclasses(cls: type[PrefvecError]) -> list[type[PrefvecError]]:
    out: list[type[PrefvecError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def error_from_code(code: str | None, message: str, **kwargs: Any) -> PrefvecError:
    """Rebuild the exception class named by an error ``code`` (used by the HTTP client)."""
    classes: list[type[PrefvecError]] = [PrefvecError, *_all_subclasses(PrefvecError)]
    for cls in classes:
        if cls.code == code:
            return cls(message, **kwargs)
    return PrefvecError(message, **kwargs)
