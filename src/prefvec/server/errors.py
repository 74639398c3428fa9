"""One mapping from exceptions to the JSON error body ``{"error": {...}}`` (OpenAI-like), and the
error responses each route declares in OpenAPI.

Declared per route (:func:`declare_route_errors`, in the generated OpenAPI): what every route can
answer (500, and 400/408/413/422 where a body or parameters are read), what its dependencies add
(401 for a user key, 401/403 for an operator route, 503 before the model is ready), what its
decorator names with :func:`error_responses`, and, for routes whose decorators live elsewhere,
:data:`ROUTE_ERRORS`. Every one of them has the :class:`~prefvec.protocol.ErrorResponse` schema.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from prefvec.errors import (
    AuthenticationError,
    BadRequestError,
    ClientDisconnectedError,
    MethodNotAllowedError,
    NotFoundError,
    PrefvecError,
    QueueFullError,
    ValidationError,
)
from prefvec.protocol import ErrorResponse

logger = logging.getLogger(__name__)

ERROR_DESCRIPTIONS = {
    400: "Bad request (the message names the field and value)",
    401: "Missing or invalid API key",
    403: "The key (or client) may not call this route",
    404: "Not found (the message names what)",
    405: "Method not allowed (see the Allow header)",
    408: "The request body stopped arriving (`body_read_timeout_s`)",
    409: "Conflict (the message names what holds the resource)",
    413: "Request body too large (`max_body_bytes` / `max_upload_bytes`)",
    422: "Invalid request (every problem, each naming its field and value)",
    429: "Queue full; retry after `Retry-After` seconds",
    500: "Internal error",
    501: "An optional backend or scorer is not installed",
    503: "Not ready (model loading) or a dependency unavailable; retry",
    504: "The request took longer than `request_timeout_s`",
}
ROUTE_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("POST", "/v1/chat/completions"): (400, 404, 409, 429, 501, 504),
    ("POST", "/v1/completions"): (400, 404, 409, 429, 501, 504),
    ("POST", "/v1/compare"): (400, 404, 409, 429, 501, 504),
    ("POST", "/v1/tokenize"): (400, 404, 409),
}
"""Errors of routes whose decorators do not list them (generation and compare)."""


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: each status with the error schema and a description."""
    return {
        code: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS.get(code, "Error")}
        for code in codes
    }


def _dependency_calls(route: APIRoute) -> set[str]:
    names: set[str] = set()
    stack = [route.dependant]
    while stack:
        dep = stack.pop()
        if dep.call is not None:
            names.add(getattr(dep.call, "__name__", ""))
        stack.extend(dep.dependencies)
    return names


def route_error_codes(route: APIRoute) -> set[int]:
    """The error statuses ``route`` can answer, from what it reads and depends on."""
    codes = {500}
    dependant = route.dependant
    methods = set(route.methods or ())
    if dependant.body_params or methods & {"POST", "PUT", "PATCH"}:
        codes |= {400, 408, 413, 422}  # 400: a body that is not UTF-8 / cannot be parsed
    if dependant.path_params or dependant.query_params:
        codes.add(422)
    calls = _dependency_calls(route)
    if "require_user" in calls:
        codes.add(401)
    if "require_operator" in calls:
        codes |= {401, 403}
    if "ready_state" in calls:
        codes.add(503)
    for method in methods:
        codes.update(ROUTE_ERRORS.get((method, route.path), ()))
    return codes


def declare_route_errors(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """Declare in ``app``'s OpenAPI every error status each route of ``routers`` can answer,
    with the :class:`~prefvec.protocol.ErrorResponse` schema (FastAPI's own 422 schema, which
    this server never sends, is replaced). Responses a route declared itself are kept."""
    table: dict[tuple[str, str], tuple[set[int], set[int]]] = {}
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.include_in_schema:
                own = {int(c) for c in route.responses if str(c).isdigit()}
                for method in route.methods or ():
                    table[(method.lower(), route.path)] = (route_error_codes(route), own)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = build()
        _add_error_schema(spec)
        for path, operations in spec.get("paths", {}).items():
            for method, op in operations.items():
                codes, own = table.get((method, path), (set(), set()))
                for code in sorted(codes - own):
                    op.setdefault("responses", {})[str(code)] = _error_spec(code)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _error_spec(code: int) -> dict[str, Any]:
    return {
        "description": ERROR_DESCRIPTIONS.get(code, "Error"),
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }


def _add_error_schema(spec: dict[str, Any]) -> None:
    schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    components.update(schema.pop("$defs", {}))
    components.setdefault("ErrorResponse", schema)


class ErrorJSONResponse(JSONResponse):
    """JSON with ASCII escapes, so any text in a message (even a lone surrogate) encodes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


def error_response(exc: PrefvecError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The HTTP response of a prefvec error (429 adds ``Retry-After``).

    Args:
        exc: the error.
        headers: extra headers (e.g. ``Allow`` of a 405).
    """
    body = exc.to_dict()
    out: dict[str, str] = dict(headers or {})
    if isinstance(exc, QueueFullError):
        body["retry_after"] = exc.retry_after
        out["Retry-After"] = str(max(1, round(exc.retry_after)))
    if exc.status_code == 503:
        out["Retry-After"] = "1"
    if isinstance(exc, AuthenticationError):
        out["WWW-Authenticate"] = "Bearer"
    return ErrorJSONResponse({"error": body}, status_code=exc.status_code, headers=out)


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


def client_gone(request: Request) -> JSONResponse:
    """A client that left mid-request: a 4xx-class client event (499), not an internal error."""
    logger.info("client left during %s %s", request.method, request.url.path)
    return error_response(ClientDisconnectedError("the client disconnected mid-request"))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PrefvecError)
    async def _prefvec(request: Request, exc: PrefvecError) -> JSONResponse:
        if isinstance(exc, ClientDisconnectedError):
            logger.info("client left during %s %s", request.method, request.url.path)
        return error_response(exc)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        return client_gone(request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems, first = validation_problems(list(exc.errors()))
        return error_response(ValidationError("; ".join(problems), problems=problems, field=first))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cause = exc.__cause__
        if isinstance(cause, PrefvecError):  # e.g. body too large while FastAPI read the body
            return error_response(cause)
        if isinstance(cause, ClientDisconnect):
            return client_gone(request)
        return error_response(_http_error(request, exc), headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(PrefvecError(f"internal error ({type(exc).__name__})"))


def _http_error(request: Request, exc: StarletteHTTPException) -> PrefvecError:
    """Starlette's own HTTP errors (no route, wrong method, ...) as prefvec errors."""
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        return NotFoundError(f"no route {where}")
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        return MethodNotAllowedError(f"method not allowed: {where}; allowed: {allow}")
    if isinstance(exc.__cause__, UnicodeDecodeError):
        return BadRequestError(
            f"the request body is not valid UTF-8 (JSON must be UTF-8): {exc.__cause__}",
            field="body",
        )
    err = BadRequestError(str(exc.detail))
    err.status_code = exc.status_code  # type: ignore[misc]
    return err
