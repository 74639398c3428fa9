"""One mapping from exceptions to the JSON error body ``{"error": {...}}`` (OpenAI-like)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from prefvec.errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PrefvecError,
    QueueFullError,
    ValidationError,
)

logger = logging.getLogger(__name__)


def error_response(exc: PrefvecError) -> JSONResponse:
    """The HTTP response of a prefvec error (429 adds ``Retry-After``)."""
    body = exc.to_dict()
    headers: dict[str, str] = {}
    if isinstance(exc, QueueFullError):
        body["retry_after"] = exc.retry_after
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if exc.status_code == 503:
        headers["Retry-After"] = "1"
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": body}, status_code=exc.status_code, headers=headers)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validation_problems(errors: list[dict[str, Any]]) -> tuple[list[str], str | None]:
    """FastAPI/pydantic errors as messages naming the field and the value received."""
    problems, first = [], None
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        name = ".".join(loc) or "body"
        first = first or name
        if err.get("type") == "json_invalid":
            problems.append(f"the request body is not valid JSON: {err.get('msg')}")
        elif err.get("type") == "missing":
            problems.append(f"`{name}` is required")
        else:
            problems.append(f"`{name}`: {err.get('msg')}, got {_short(err.get('input'))}")
    return problems, first


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PrefvecError)
    async def _prefvec(request: Request, exc: PrefvecError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems, first = validation_problems(list(exc.errors()))
        return error_response(ValidationError("; ".join(problems), problems=problems, field=first))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cause = exc.__cause__
        if isinstance(cause, PrefvecError):  # e.g. body too large while FastAPI read the body
            return error_response(cause)
        if exc.status_code == 404:
            err: PrefvecError = NotFoundError(f"no route {request.method} {request.url.path}")
        else:
            err = BadRequestError(str(exc.detail))
            err.status_code = exc.status_code  # type: ignore[misc]
        return error_response(err)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(PrefvecError(f"internal error ({type(exc).__name__})"))
