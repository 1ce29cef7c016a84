"""Logs that say which request and which tenant, and never show a secret.

- Every request to our blueprint gets a request id (the caller's ``X-Request-ID`` when it is a sane
  token, else a new one), echoed in the answer's ``X-Request-ID``. Event handling runs with
  ``event-<id>``. Both, and the tenant (client id), are kept in context variables, so any log line
  written while serving it, services included, carries them.
- ``ContextFilter`` puts ``request_id`` and ``tenant`` on each record; ``RedactFilter`` masks
  secrets in the message and in tracebacks: webhook secrets (``/rest/1/<secret>/``), application /
  access / refresh tokens, bearer keys.
- ``BITRIX_LOG_FORMAT=json`` (standalone app) writes one JSON object per line (python-json-logger).

The filters go on our own loggers (``flask_bitrix24`` and the HTTP client's ``urllib3``, which logs
request paths, secret included, at DEBUG); the standalone app also puts them on its root handler.
A host app adds them to its own handlers with ``install_filters(handler)``.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from flask import g, request

from .services.secrets import mask

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("bitrix24_request_id", default="-")
tenant_var: contextvars.ContextVar[str] = contextvars.ContextVar("bitrix24_tenant", default="-")

_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_CLIENT_ID = re.compile(r"^[1-9][0-9]{0,9}$")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s tenant=%(tenant)s]: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(request_id)s %(tenant)s %(message)s"


_TOKEN = r"[A-Za-z0-9._~+/=-]{8,}"  # secret-looking: 8 or more token characters
_PATTERNS: list[tuple[re.Pattern[str], object]] = [
    # https://portal/rest/1/<secret>/method, also percent-encoded (%2Frest%2F1%2F<secret>)
    # Any secret the validator allows (1-128 of A-Z a-z 0-9 _ -) when a path segment follows, as in
    # every webhook URL; 8+ characters before anything else (so /api/rest/1/items is left alone).
    (re.compile(r"((?:/|%2F)rest(?:/|%2F)\d+(?:/|%2F))([A-Za-z0-9_-]{1,128})(?=/|%2F)", re.IGNORECASE),
     lambda m: m.group(1) + mask(m.group(2))),
    (re.compile(r"((?:/|%2F)rest(?:/|%2F)\d+(?:/|%2F))([A-Za-z0-9_-]{8,128})(?=\s|$|[\"'?#&])", re.IGNORECASE),
     lambda m: m.group(1) + mask(m.group(2))),
    # auth[application_token]=..., "outbound_token": "...", access/refresh tokens, client_secret,
    # password=...; brackets may come percent-encoded (auth%5Bapplication_token%5D=...)
    (re.compile(r"((?:application_token|outbound_token|access_token|refresh_token|client_secret|password|api_key)"
                r"(?:\]|%5D)?[\"']?\s*(?::|=|%3D)\s*[\"']?)([^\"'&\s,}]+)", re.IGNORECASE),
     lambda m: m.group(1) + mask(m.group(2))),
    # Authorization: Bearer <key> / Basic <credentials>; X-Api-Key: <key>
    (re.compile(rf"((?:Bearer|Basic)\s+|X-Api-Key:\s*)({_TOKEN})", re.IGNORECASE),
     lambda m: m.group(1) + mask(m.group(2))),
    # SQLAlchemy's error texts end with the statement's values: "[parameters: (1, 'https://...', 'token')]"
    (re.compile(r"(\[parameters: ).*(\])"), lambda m: m.group(1) + "(redacted)" + m.group(2)),
    # passwords in URLs: redis://:pass@host, postgresql://user:pass@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@/\s]+)(@)", re.IGNORECASE),
     lambda m: m.group(1) + mask(m.group(2)) + m.group(3)),
]


def redact(text: str) -> str:
    for pattern, replace in _PATTERNS:
        text = pattern.sub(replace, text)
    return text


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.tenant = tenant_var.get()
        return True


class RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            # Formatters that rebuild the traceback from exc_info (python-json-logger does) would
            # bring the secret back: leave them only the cleaned text.
            record.exc_info = None
        return True


_CONTEXT, _REDACT = ContextFilter(), RedactFilter()
OUR_LOGGERS = ("flask_bitrix24", "urllib3.connectionpool")


def install_filters(target: logging.Logger | logging.Handler) -> None:
    for flt in (_CONTEXT, _REDACT):
        if flt not in target.filters:
            target.addFilter(flt)


def install_on_our_loggers() -> None:
    for name in OUR_LOGGERS:
        install_filters(logging.getLogger(name))


def configure_standalone(log_format: str) -> None:
    """The standalone app's logging: one stream handler on the root logger, text or JSON."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        if log_format == "json":
            try:
                from pythonjsonlogger.json import JsonFormatter
            except ImportError:
                raise RuntimeError(
                    "BITRIX_LOG_FORMAT=json needs python-json-logger: pip install 'flask-bitrix24[json-logs]'"
                ) from None

            handler.setFormatter(JsonFormatter(JSON_FIELDS, rename_fields={"levelname": "level", "asctime": "time"}))
        else:
            handler.setFormatter(logging.Formatter(TEXT_FORMAT))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    for handler in root.handlers:
        install_filters(handler)
    # Alembic says "Context impl SQLiteImpl" on every start; our setup report says what was applied.
    if logging.getLogger("alembic").level == logging.NOTSET:
        logging.getLogger("alembic").setLevel(logging.WARNING)


@contextmanager
def bound(*, request_id: str | None = None, tenant: str | None = None) -> Iterator[None]:
    """Log lines written inside carry this request id / tenant."""
    tokens = []
    if request_id is not None:
        tokens.append((request_id_var, request_id_var.set(request_id)))
    if tenant is not None:
        tokens.append((tenant_var, tenant_var.set(tenant)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def begin_request(_endpoint: str | None = None, _values: dict | None = None) -> None:
    """The first ``url_value_preprocessor`` of our blueprint: before the path's ids are parsed (the
    tenant is the raw client id, when it looks like one), so that a refusal of them carries the
    request id too."""
    incoming = request.environ.get("HTTP_X_REQUEST_ID", "")  # request.headers["X-Request-ID"], read directly
    rid = incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex
    client = (_values if _values is not None else request.view_args or {}).get("client_id")
    g.bitrix24_log_tokens = [
        (request_id_var, request_id_var.set(rid)),
        (tenant_var, tenant_var.set(client if isinstance(client, str) and _CLIENT_ID.match(client) else "-")),
    ]
    g.bitrix24_request_id = rid


def end_request(response):
    """``after_request``: echo the request id."""
    rid = g.get("bitrix24_request_id")
    if rid:
        response.headers["X-Request-ID"] = rid
    return response


def teardown(_exc=None) -> None:
    for var, token in reversed(g.pop("bitrix24_log_tokens", [])):
        try:
            var.reset(token)
        except ValueError:  # set in another context (a streamed answer's generator): leave it
            pass
