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
    if request.endpoint == "bitrix24.metrics":
        _require_metrics_key(state)
        return
    if state.authorize is not None:
        if not state.authorize(_client_id_from_path()):
            raise ApiError(403, "FORBIDDEN", "not allowed to use the Bitrix24 API for this client")
        return
    if state.api_keys:
        if not _bearer_matches(state.api_keys):
            raise ApiError(401, "UNAUTHORIZED", "send 'Authorization: Bearer <BITRIX_API_KEY>'")
        return
    if state.auth_disabled:
        return
    raise ApiError(
        401,
        "UNAUTHORIZED",
        "API authentication is not configured: set BITRIX_API_KEY (or BITRIX_AUTH_DISABLED=1 for a local demo)",
    )


def _bearer_matches(keys: tuple[str, ...]) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    # compare_digest against every key (no early exit) so timing says nothing about which matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token.encode("utf-8"), key.encode("utf-8"))
    return scheme.lower() == "bearer" and bool(token) and matched


def _require_metrics_key(state) -> None:
    """Metrics span every tenant, so the per-client ``authorize`` hook cannot grant them: they need
    BITRIX_METRICS_TOKEN or BITRIX_API_KEY (or BITRIX_AUTH_DISABLED for a demo)."""
    keys = state.metrics_keys + state.api_keys
    if keys:
        if not _bearer_matches(keys):
            raise ApiError(401, "UNAUTHORIZED", "send 'Authorization: Bearer <BITRIX_METRICS_TOKEN or BITRIX_API_KEY>'")
        return
    if state.auth_disabled:
        return
    raise ApiError(401, "UNAUTHORIZED", "metrics need a key: set BITRIX_METRICS_TOKEN (or BITRIX_API_KEY)")
