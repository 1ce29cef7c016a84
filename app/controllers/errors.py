"""JSON errors for the blueprint: one ``error_response`` helper and the handlers that use it.

Every error our endpoints produce is ``{"error": CODE, "error_description": text}``: never an
HTML page, never a stack trace. The handlers are registered on our blueprint only, so the host
app's own error pages stay the host's.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from flask import Response, jsonify
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from ..services.breaker import Suspended
from ..services.errors import (
    AppNotUsable,
    Bitrix24Error,
    LimitExceeded,
    OperatingLimit,
    PortalAuthFailed,
)
from ..services.locks import LockTimeout
from ..services.secrets import SecretKeyError
from ..services.webhook_rules import InvalidConfig
from ..store import StoreNotReady

log = logging.getLogger("flask_bitrix24")


class ApiError(Exception):
    """Raised by controllers for input we refuse before calling anything."""

    def __init__(self, status: int, code: str, description: str, **extra: Any) -> None:
        super().__init__(description)
        self.status, self.code, self.description, self.extra = status, code, description, extra


def retry_after_header(seconds: float) -> str:
    """Whole seconds for ``Retry-After``: at least 1, at most an hour."""
    return str(max(1, math.ceil(min(seconds, 3600))))


def error_response(
    status: int, code: str, description: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    response = jsonify({"error": code, "error_description": description, **extra})
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


DEFAULT_RETRY_AFTER = {"RateLimited": 2, "OperatingLimit": 60}


def handle_bitrix24_error(exc: Bitrix24Error) -> Response:
    status = exc.status
    headers = {}
    extra: dict[str, Any] = {}
    if isinstance(exc, LimitExceeded):
        default = DEFAULT_RETRY_AFTER["OperatingLimit" if isinstance(exc, OperatingLimit) else "RateLimited"]
        wait = exc.retry_after if isinstance(exc.retry_after, (int, float)) and math.isfinite(exc.retry_after) \
            and exc.retry_after > 0 else default
        headers["Retry-After"] = retry_after_header(wait)
    if exc.method:
        extra["method"] = exc.method
    if exc.http_status is not None:
        extra["bitrix24_status"] = exc.http_status
    code = exc.code
    if isinstance(exc, AppNotUsable):
        pass  # its own code (APP_UNINSTALLED, PAYMENT_REQUIRED...): what to do differs, and no call was sent
    elif isinstance(exc, PortalAuthFailed):
        # Keep the portal's own code visible: INVALID_CREDENTIALS and insufficient_scope need different fixes.
        extra["bitrix24_error"] = exc.code
        code = "PORTAL_AUTH_FAILED"
        if isinstance(exc, Suspended):  # not sent: the breaker is open (services/breaker.py)
            extra["suspended"] = True
            headers["Retry-After"] = retry_after_header(exc.retry_after or 1)
    log.info("bitrix24 error answered %s: %r", status, exc)
    return error_response(status, code, exc.description, headers, **extra)


def handle_api_error(exc: ApiError) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="bitrix24"'} if exc.status == 401 else {}
    extra = dict(exc.extra)
    retry_after = extra.pop("retry_after", None)
    if exc.status in (429, 503) or retry_after is not None:
        wait = retry_after if isinstance(retry_after, (int, float)) and math.isfinite(retry_after) else 1
        headers["Retry-After"] = retry_after_header(wait)
    return error_response(exc.status, exc.code, exc.description, headers, **extra)


def handle_invalid_config(exc: InvalidConfig) -> Response:
    status = getattr(exc, "status", 400)
    return error_response(status, "INSTALLATION_LINKED" if status == 409 else "INVALID_CONFIG", str(exc),
                          field=exc.field)


def handle_store_not_ready(exc: StoreNotReady) -> Response:
    log.error("Bitrix24 config store: %s", exc)
    return error_response(exc.status, exc.code, str(exc), {"Retry-After": "60"})


def handle_secret_key_error(exc: SecretKeyError) -> Response:
    log.error("%s", exc)
    return error_response(500, "SECRET_KEY_ERROR", str(exc))


_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "BODY_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def handle_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = _HTTP_CODES.get(status, exc.name.upper().replace(" ", "_"))
    description = exc.description or exc.name
    if status == 413:
        from .auth import PUBLIC_ENDPOINTS, endpoint_name

        setting = "BITRIX_EVENT_MAX_BYTES" if endpoint_name() in PUBLIC_ENDPOINTS else "BITRIX_MAX_BODY_BYTES"
        description = f"the request body is larger than {setting} allows"
    response = error_response(status, code, description)
    if status == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


# Seconds a caller is told to wait while the database or Redis is away (a restart, a failover).
SERVICE_RETRY_AFTER = "5"


def handle_database_error(exc: DBAPIError) -> Response:
    """The database is unreachable (down, restarting, failing over) or dropped the connection:
    503 with Retry-After, never a 500, and the session is cleared for the next request."""
    try:
        from ..runtime import runtime

        runtime().session.rollback()
    except Exception:  # noqa: BLE001 - the connection is gone; the pool replaces it
        pass
    if not (isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated):
        return handle_unexpected(exc)  # a bug or a schema problem, not an outage
    log.warning("database unavailable: %s", type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__)
    return error_response(503, "DATABASE_UNAVAILABLE", "the database is not reachable right now; retry shortly",
                          {"Retry-After": SERVICE_RETRY_AFTER})


def handle_redis_error(exc: Exception) -> Response:
    log.warning("Redis unavailable: %s", type(exc).__name__)
    return error_response(503, "REDIS_UNAVAILABLE",
                          "Redis (BITRIX_REDIS_URL) is not reachable right now; retry shortly",
                          {"Retry-After": SERVICE_RETRY_AFTER})


def handle_lock_timeout(exc: LockTimeout) -> Response:
    return error_response(exc.status, exc.code, f"{exc}: the same work is running for this client; retry shortly",
                          {"Retry-After": SERVICE_RETRY_AFTER})


def handle_unexpected(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return handle_http_exception(exc)
    log.exception("unexpected error in the Bitrix24 API")
    return error_response(500, "INTERNAL_ERROR", "unexpected error; the server log has the details")


def register_error_handlers(bp) -> None:
    bp.register_error_handler(Bitrix24Error, handle_bitrix24_error)
    bp.register_error_handler(ApiError, handle_api_error)
    bp.register_error_handler(InvalidConfig, handle_invalid_config)
    bp.register_error_handler(SecretKeyError, handle_secret_key_error)
    bp.register_error_handler(StoreNotReady, handle_store_not_ready)
    bp.register_error_handler(HTTPException, handle_http_exception)
    bp.register_error_handler(DBAPIError, handle_database_error)
    bp.register_error_handler(LockTimeout, handle_lock_timeout)
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # without the redis extra there is no Redis to lose
        pass
    else:
        bp.register_error_handler(RedisConnectionError, handle_redis_error)
        bp.register_error_handler(RedisTimeoutError, handle_redis_error)
    bp.register_error_handler(Exception, handle_unexpected)
