"""API keys: operator keys guard uploads/deletes and experiment creation, user keys (when any are
configured) guard generation. Keys are compared in constant time (``hmac.compare_digest``) against
every configured key, without short-circuiting.

With no operator key configured, operator routes serve loopback clients only (and the server
logs a warning at start saying so).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping, Sequence

from prefvec.errors import AuthenticationError, PermissionDeniedError


def extract_key(headers: Mapping[str, str]) -> str | None:
    """The API key of a request: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def key_matches(key: str, keys: Sequence[str]) -> bool:
    """Constant-time membership: every configured key is compared."""
    found = False
    given = key.encode()
    for candidate in keys:
        found |= hmac.compare_digest(given, candidate.encode())
    return found


def is_loopback(host: str | None) -> bool:
    """Whether a client address is loopback (127.0.0.0/8, ::1)."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_operator(
    key: str | None,
    client_host: str | None,
    operator_keys: Sequence[str],
    user_keys: Sequence[str] = (),
) -> None:
    """Allow an operator request or raise.

    Raises:
        AuthenticationError: keys are configured and the request has none, or an unknown one.
        PermissionDeniedError: a user key on an operator route, or, with no operator key
            configured, a client that is not loopback.
    """
    if not operator_keys:
        if is_loopback(client_host):
            return
        raise PermissionDeniedError(
            f"operator routes serve loopback clients only while no operator key is configured "
            f"(set PREFVEC_OPERATOR_KEYS); client {client_host!r} refused",
            field="authorization",
        )
    if key is None:
        raise AuthenticationError(
            "this route needs an operator key (`Authorization: Bearer <key>` or `X-API-Key`), "
            "got none",
            field="authorization",
        )
    if key_matches(key, operator_keys):
        return
    if key_matches(key, user_keys):
        raise PermissionDeniedError("a user key cannot call operator routes", field="authorization")
    raise AuthenticationError("invalid operator key", field="authorization")


def check_user(key: str | None, user_keys: Sequence[str], operator_keys: Sequence[str]) -> None:
    """Allow a generation request: anyone when no user key is configured, else a user or
    operator key.

    Raises:
        AuthenticationError: user keys are configured and the key is missing or unknown.
    """
    if not user_keys:
        return
    if key is None:
        raise AuthenticationError(
            "this server needs an API key (`Authorization: Bearer <key>` or `X-API-Key`), got none",
            field="authorization",
        )
    if not (key_matches(key, user_keys) | key_matches(key, operator_keys)):
        raise AuthenticationError("invalid API key", field="authorization")
