"""FastAPI dependencies: the server state, readiness, and the two key checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from prefvec.server.auth import check_operator, check_user, client_address, extract_key
from prefvec.server.state import ServerState


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.prefvec
    return state


def ready_state(request: Request) -> ServerState:
    """The state, once the model is loaded (503 before)."""
    state = get_state(request)
    state.require_ready()
    return state


def require_operator(request: Request) -> None:
    """Operator key (or, with none configured and the opt-in set, a loopback client)."""
    s = get_state(request).settings
    peer = request.client.host if request.client else None
    host = client_address(peer, request.headers.get("x-forwarded-for"), s.trusted_proxies)
    check_operator(
        extract_key(request.headers), host, s.operator_keys, s.user_keys,
        trust_loopback=s.trust_loopback_operator,
    )  # fmt: skip


def require_user(request: Request) -> None:
    """User key when user keys are configured."""
    s = get_state(request).settings
    check_user(extract_key(request.headers), s.user_keys, s.operator_keys)


State = Annotated[ServerState, Depends(get_state)]
Ready = Annotated[ServerState, Depends(ready_state)]
Operator = Depends(require_operator)
User = Depends(require_user)
