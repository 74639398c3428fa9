"""API keys: operator keys guard uploads/deletes and experiment creation, user keys (when any are
configured) guard generation. Keys are compared in constant time (``hmac.compare_digest``) against
every configured key, without short-circuiting.

With no operator key configured, operator routes are closed, unless the operator opts in to
loopback trust (``trust_loopback_operator``): then they serve loopback clients only. The client
address is the TCP peer; ``X-Forwarded-For`` replaces it only when the peer is one of the
``trusted_proxies`` (and then the right-most address that is not itself a trusted proxy is the
client, so a client cannot prepend a forged address). The start-up log says what is open to whom
(:func:`access_summary`).
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


def _in_networks(host: str, networks: Sequence[str]) -> bool:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(n, strict=False) for n in networks)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[str]
) -> str | None:
    """The client of a request: the TCP ``peer``, or, when the peer is a trusted proxy, the
    right-most ``X-Forwarded-For`` hop that is not a trusted proxy itself.

    Args:
        peer: the address the connection comes from.
        forwarded_for: the ``X-Forwarded-For`` header (comma-separated hops, client first).
        trusted_proxies: addresses or networks of the proxies in front of the server.
    """
    if not peer or not forwarded_for or not _in_networks(peer, trusted_proxies):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in_networks(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer


def check_operator(
    key: str | None,
    client_host: str | None,
    operator_keys: Sequence[str],
    user_keys: Sequence[str] = (),
    *,
    trust_loopback: bool = False,
) -> None:
    """Allow an operator request or raise.

    Args:
        key: the request's API key (None without one).
        client_host: the client address (see :func:`client_address`).
        operator_keys: configured operator keys.
        user_keys: configured user keys (a user key is told it is not an operator's).
        trust_loopback: with no operator key, serve loopback clients (the opt-in setting).

    Raises:
        AuthenticationError: keys are configured and the request has none, or an unknown one.
        PermissionDeniedError: a user key on an operator route; with no operator key, any
            client unless loopback trust is on and the client is loopback.
    """
    if not operator_keys:
        if trust_loopback and is_loopback(client_host):
            return
        how = (
            "loopback clients only (`trust_loopback_operator`)"
            if trust_loopback
            else "nobody: set PREFVEC_OPERATOR_KEYS, or PREFVEC_TRUST_LOOPBACK_OPERATOR=true to "
            "serve loopback clients"
        )
        raise PermissionDeniedError(
            f"no operator key is configured, so operator routes serve {how}; "
            f"client {client_host!r} refused",
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


def access_summary(
    operator_keys: Sequence[str],
    user_keys: Sequence[str],
    trust_loopback: bool,
    trusted_proxies: Sequence[str],
) -> list[str]:
    """What is open to whom, one line each (logged at start)."""
    if operator_keys:
        op = f"operator routes: callers with one of {len(operator_keys)} operator keys"
    elif trust_loopback:
        op = "operator routes: loopback clients without a key (trust_loopback_operator = true)"
    else:
        op = (
            "operator routes: closed (no operator key; set PREFVEC_OPERATOR_KEYS or opt in with "
            "PREFVEC_TRUST_LOOPBACK_OPERATOR=true)"
        )
    gen = (
        f"generation and read routes: callers with one of {len(user_keys)} user keys (or an "
        "operator key)"
        if user_keys
        else "generation and read routes: open to every client (no user key)"
    )
    proxy = (
        f"X-Forwarded-For: trusted from {', '.join(trusted_proxies)} only"
        if trusted_proxies
        else "X-Forwarded-For: ignored (no trusted_proxies)"
    )
    return [op, gen, proxy]
