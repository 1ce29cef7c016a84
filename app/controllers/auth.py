"""Who may use our API: a bearer key, or the host app's ``authorize(client_id)`` hook."""

from __future__ import annotations

import hmac
import re

from flask import current_app, request

from .errors import ApiError

# The event receivers prove themselves with Bitrix24's application token instead.
PUBLIC_ENDPOINTS = frozenset({"bitrix24.receive_event", "bitrix24.receive_client_event"})
# Health names no tenant and no secret; load balancers ask it without credentials.
OPEN_ENDPOINTS = PUBLIC_ENDPOINTS | {"bitrix24.health"}


def _client_id_from_path() -> int | None:
    raw = (request.view_args or {}).get("client_id")
    if isinstance(raw, str) and re.fullmatch(r"[1-9][0-9]{0,9}", raw) and int(raw) < 2**31:
        return int(raw)
    return None


def require_api_auth() -> None:
    """``before_request`` of the blueprint. Raises ``ApiError`` (401/403) when not allowed."""
    if request.endpoint in OPEN_ENDPOINTS:
        return
    state = current_app.extensions["bitrix24"]
    if state.authorize is not None:
        if not state.authorize(_client_id_from_path()):
            raise ApiError(403, "FORBIDDEN", "not allowed to use the Bitrix24 API for this client")
        return
    if state.api_keys:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        # compare_digest against every key (no early exit) so timing says nothing about which matched.
        matched = False
        for key in state.api_keys:
            matched |= hmac.compare_digest(token.encode("utf-8"), key.encode("utf-8"))
        if scheme.lower() != "bearer" or not token or not matched:
            raise ApiError(401, "UNAUTHORIZED", "send 'Authorization: Bearer <BITRIX_API_KEY>'")
        return
    if state.auth_disabled:
        return
    raise ApiError(
        401,
        "UNAUTHORIZED",
        "API authentication is not configured: set BITRIX_API_KEY (or BITRIX_AUTH_DISABLED=1 for a local demo)",
    )
