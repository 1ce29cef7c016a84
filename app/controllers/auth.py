"""Who may use our API: a bearer key, or the host app's ``authorize(client_id)`` hook."""

from __future__ import annotations

import hmac

from flask import request

from ..runtime import Runtime, runtime
from .errors import ApiError
from .params import bad_path_id

# The event receivers prove themselves with Bitrix24's application token instead.
PUBLIC_ENDPOINTS = frozenset({"receive_event", "receive_client_event", "app_install"})
# Health names no tenant and no secret; load balancers ask it without credentials.
OPEN_ENDPOINTS = PUBLIC_ENDPOINTS | {"health"}


def _client_id_from_path() -> int | None:
    """The path's client id, already an int: ``params.parse_path_ids`` parsed it for the views too.
    A malformed one is 400 INVALID_ID here, before the hook runs: the hook never sees an id a view
    would not use (and must not read a missing one as "no client")."""
    bad = bad_path_id()
    if bad is not None and bad.extra.get("field") == "client_id":
        raise bad
    return (request.view_args or {}).get("client_id")


def endpoint_name(rt: Runtime | None = None) -> str:
    """The request's endpoint within our blueprint (``get_record``), whatever the blueprint is called."""
    rt = rt or runtime()
    endpoint = request.endpoint or ""
    prefix = rt.blueprint_name + "."
    return endpoint[len(prefix):] if endpoint.startswith(prefix) else endpoint


def require_api_auth() -> None:
    """``before_request`` of the blueprint. Raises ``ApiError`` (401/403) when not allowed."""
    rt = runtime()
    endpoint = endpoint_name(rt)
    if endpoint in OPEN_ENDPOINTS:
        return
    if endpoint == "metrics":
        _require_metrics_key(rt)
        return
    if rt.hooks.authorize is not None:
        decision = rt.hooks.authorize(_client_id_from_path())
        if decision is None:
            raise ApiError(401, "UNAUTHORIZED", "sign in to use the Bitrix24 API")
        if decision is not True:
            raise ApiError(403, "FORBIDDEN", "not allowed to use the Bitrix24 API for this client")
        if request.method == "POST" and not request.is_json:
            # The hook may rest on a session cookie, which a cross-site form post carries: every POST
            # (a body-less replay too) must be JSON, which a browser sends cross-site only after a
            # CORS preflight the host controls. A bearer key is never sent by a browser on its own.
            raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE",
                           "send POST requests with 'Content-Type: application/json' (a body of {} will do)")
        return
    if rt.api_keys:
        if not _bearer_matches(rt.api_keys):
            raise ApiError(401, "UNAUTHORIZED", "send 'Authorization: Bearer <BITRIX_API_KEY>'")
        return
    if rt.auth_disabled:
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


def _require_metrics_key(rt: Runtime) -> None:
    """Metrics span every tenant, so the per-client ``authorize`` hook cannot grant them: they need
    BITRIX_METRICS_TOKEN or BITRIX_API_KEY (or BITRIX_AUTH_DISABLED for a demo)."""
    keys = rt.metrics_keys + rt.api_keys
    if keys:
        if not _bearer_matches(keys):
            raise ApiError(401, "UNAUTHORIZED", "send 'Authorization: Bearer <BITRIX_METRICS_TOKEN or BITRIX_API_KEY>'")
        return
    if rt.auth_disabled:
        return
    raise ApiError(401, "UNAUTHORIZED", "metrics need a key: set BITRIX_METRICS_TOKEN (or BITRIX_API_KEY)")
