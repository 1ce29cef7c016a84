"""The public service API: ``bx_call`` and friends.

``bx_call`` finds the client's webhook base (its saved config, else ``BITRIX_WEBHOOK_BASE``), encodes
the params the way PHP reads them, POSTs through the portal's pooled session and returns the
decoded Bitrix24 envelope, or raises a ``Bitrix24Error`` subclass (see ``errors``). It needs an app
context (for the database and the app's settings), never a request.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

from ..runtime import runtime
from .client_config import portal_target
from .errors import (
    BadInput,
    Bitrix24Error,
    ConfigMissing,
    LimitExceeded,
    MethodNotFound,
    NotFound,
    OperatingLimit,
    OutcomeUnknown,
    PortalAuthFailed,
    PortalMoved,
    PortalTimeout,
    RateLimited,
    ServerError,
    TransportError,
)
from .metrics import tenant_label
from .secrets import mask, mask_url
from .wire import ENCODE_ERRORS, EncodedForm, flatten_params, form_body

__all__ = [
    "bx_call",
    "background_work",
    "bx_batch",
    "bx_list_all",
    "flatten_params",
    "Bitrix24Error",
    "BadInput",
    "ConfigMissing",
    "LimitExceeded",
    "MethodNotFound",
    "NotFound",
    "OperatingLimit",
    "OutcomeUnknown",
    "PortalAuthFailed",
    "PortalMoved",
    "PortalTimeout",
    "RateLimited",
    "ServerError",
    "TransportError",
]

log = logging.getLogger("flask_bitrix24")

# Method names are appended to the webhook URL: anything but dotted names could change the path.
_METHOD = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


_BACKGROUND: ContextVar[bool] = ContextVar("bitrix24_background", default=False)


@contextmanager
def background_work() -> Iterator[None]:
    """Calls made inside are background work (a sync job, a handler): they yield the portal's
    bucket to interactive calls (the views people wait on). Event handlers run inside it already."""
    token = _BACKGROUND.set(True)
    try:
        yield
    finally:
        _BACKGROUND.reset(token)


def bx_call(
    method: str,
    params: dict[str, Any] | list | None = None,
    *,
    client_id: int | None = None,
    max_wait: float | None = None,
    repeatable: bool | None = None,
    background: bool | None = None,
) -> dict[str, Any]:
    """Call a Bitrix24 REST method for a client and return the whole envelope.

    The envelope is Bitrix24's JSON answer: ``result``, plus ``total``/``next`` on lists and
    ``time``. The call is paced by the portal's bucket and retried by error class (see
    ``caller``); ``max_wait`` bounds all waiting (default ``BITRIX_MAX_WAIT``); ``repeatable``
    overrides whether the method is safe to send twice (default: reads, updates and deletes are).
    ``background`` calls (bulk jobs, event handlers, anything inside ``background_work()``; the
    default is the surrounding block's) leave a fifth of the portal's bucket to interactive calls and
    never queue ahead of them.
    Reads ``BITRIX_WEBHOOK_BASE``, ``BITRIX_ALLOWED_HOSTS``, ``BITRIX_RATE_*``, ``BITRIX_MAX_WAIT``,
    ``BITRIX_RETRY_ATTEMPTS`` and ``BITRIX_TIMEOUT_*``.
    """
    if not isinstance(method, str) or not _METHOD.fullmatch(method):
        raise BadInput(f"{method!r} is not a Bitrix24 method name", code="INVALID_METHOD")
    try:
        # Encoded here, once: what cannot be sent is refused before it takes a place in the
        # portal's bucket, and retries send this same body.
        body = form_body(params)
    except ENCODE_ERRORS as exc:
        message = f"these params cannot be sent to Bitrix24: {exc}"
        raise BadInput(message, code="INVALID_PARAMS", method=method) from None
    target = portal_target(client_id)
    state = runtime()
    # Calls on the global BITRIX_WEBHOOK_BASE are one tenant, "env", whatever client id they name.
    tenant = tenant_label(client_id if target.source in ("database", "app") else None)
    call = dict(bucket=state.bucket_for(target.rate_limit), max_wait=max_wait, repeatable=repeatable, tenant=tenant,
                background=_BACKGROUND.get() if background is None else background)
    try:
        if target.member_id is not None:
            envelope = _app_call(state, target.member_id, method, body, client_id=client_id, **call)
        else:
            envelope = _guarded_call(state, target.base, method, body, breaker_key=target.base, **call)
    except Bitrix24Error as exc:
        log.info("bitrix24 %s failed for client %s: %s", method, client_id, exc)
        raise
    log.debug("bitrix24 %s ok for client %s", method, client_id)
    return envelope


def operating_room(method: str, *, client_id: int | None = None, max_wait: float = 0.0,
                   at_least: int = 1) -> int | None:
    """How many calls of ``method`` background work may send to the client's portal now within the
    method's operating budget (``PortalCaller.room``), waiting up to ``max_wait`` for ``at_least``; None
    when nothing is known to plan by. A hint for work that can split itself: each call is still admitted."""
    state = runtime()
    try:
        target = portal_target(client_id)
        base = (state.tokens.current(target.member_id).client_endpoint if target.member_id is not None
                else target.base)
    except Bitrix24Error:
        return None  # the call itself will say what is wrong
    tenant = tenant_label(client_id if target.source in ("database", "app") else None)
    return state.caller.room(base, method, background=True, max_wait=max_wait, tenant=tenant, at_least=at_least)


def call_installation(member_id: str, method: str, params: dict[str, Any] | list | None = None, *,
                      max_wait: float | None = None) -> dict[str, Any]:
    """App mode: call ``method`` on the portal of an installation, linked to a client or not (the
    install handler binds events this way), with its tokens, paced and retried like ``bx_call``."""
    state = runtime()
    inst = state.installations.get(member_id) if state.app_mode else None
    tenant = tenant_label(inst.client_id if inst is not None else None)
    try:
        body = form_body(params)
    except ENCODE_ERRORS as exc:
        raise BadInput(f"these params cannot be sent to Bitrix24: {exc}", code="INVALID_PARAMS",
                       method=method) from None
    return _app_call(state, member_id, method, body, client_id=None, bucket=state.default_bucket, max_wait=max_wait,
                     repeatable=None, tenant=tenant, background=True)


# A refused access token is renewed and the call repeated once (app mode), not counted against the credentials.
_TOKEN_REFUSED = frozenset({"expired_token", "invalid_token"})


def _app_call(state: Any, member_id: str, method: str, body: str, *, client_id: int | None,
              **call: Any) -> dict[str, Any]:
    """A call with the installation's access token (``auth`` in the body, as
    https://apidocs.bitrix24.com/settings/oauth/index.html has it) at its REST address.

    - ``expired_token``: the pair is renewed (``TokenBroker.renew``: one refresh however many
      callers, or the pair another process stored) and the call repeated; when the stored pair it
      took has expired too, once more. This call asks for at most one refresh.
    - ``invalid_token``: another process may have replaced the pair: a newer stored pair is taken,
      the OAuth server is not asked.
    - A redirect: the portal was renamed
      (https://apidocs.bitrix24.com/settings/how-to-call-rest-api/change-domen.html). Its new address
      comes from the OAuth server's answer, found by member_id, never from the redirect's Location.
    """
    from urllib.parse import quote

    from .client_config import forget_target
    from .errors import AppNotUsable
    from .installations import unusable

    tokens = state.tokens.current(member_id)
    tried: set[str] = set()
    while True:
        signed = EncodedForm((body + "&" if body else "") + "auth=" + quote(tokens.access_token, safe="")
                             + ("&auth_connector=" + quote(tokens.connector, safe="") if tokens.connector else ""))
        signed.methods = getattr(body, "methods", None)  # a batch's commands, as batch_body kept them
        try:
            # A refused token is the token's problem, not bad credentials: the breaker does not count it.
            return _guarded_call(state, tokens.client_endpoint, method, signed, breaker_key="app:" + member_id,
                                 secret=tokens.access_token,
                                 spare=lambda exc: (exc.code or "").lower() in _TOKEN_REFUSED, **call)
        except PortalMoved:
            if "moved" in tried:
                raise
            tried.add("moved")
            renewed = state.tokens.renew(member_id, tokens, "moved")
            if renewed.client_endpoint == tokens.client_endpoint:
                raise
            log.warning("bitrix24 portal %s moved: calls now go to %s", member_id, renewed.client_endpoint)
            tokens = renewed
        except PortalAuthFailed as exc:
            code = (exc.code or "").lower()
            reason = {"expired_token": "expired", "invalid_token": "invalid"}.get(code)
            if reason == "expired" and "expired" in tried and not tokens.fresh and "stale" not in tried:
                reason = "stale"  # the pair another process stored has expired too: now one refresh
            if reason is not None and reason not in tried:
                tried.add(reason)
                renewed = state.tokens.renew(member_id, tokens, "expired" if reason == "stale" else reason)
                if renewed.access_token == tokens.access_token:
                    raise  # nothing newer: the token itself is refused
                tokens = renewed
                continue
            if code == "payment_required":
                state.installations.mark(member_id, "PAYMENT_REQUIRED", exc.description or "Payment required")
                state.tokens.forget(member_id)
                if client_id is not None:
                    forget_target(client_id)
                raise (unusable(state.installations.get(member_id))
                       or AppNotUsable(exc.description, code="PAYMENT_REQUIRED")) from None
            raise


def _guarded_call(state: Any, base: str, method: str, body: Any, *, breaker_key: str, tenant: str,
                  secret: str | None = None, spare: Any = None, **call: Any) -> dict[str, Any]:
    """One call through the breaker (``breaker_key``: the webhook, the installation, or the portal
    host for checks), the secret (the webhook's, or ``secret``) scrubbed from any error, the outcome
    counted in the metrics. An error ``spare(exc)`` accepts is not held against the credentials."""
    started = time.perf_counter()
    try:
        state.breaker.before_call(tenant, breaker_key)  # Suspended: credentials refused again and again
        try:
            envelope = state.caller.call(base, method, body, tenant=tenant, **call)
        except Bitrix24Error as exc:
            _scrub_secret(exc, base, secret)  # first: the breaker keeps (a cut of) the description
            if spare is None or not spare(exc):
                state.breaker.record(tenant, breaker_key, exc)
            raise
        state.breaker.record(tenant, breaker_key, None)
    except Bitrix24Error as exc:
        _scrub_secret(exc, base, secret)
        state.metrics.record_call(tenant, method.lower(), time.perf_counter() - started,
                                  exc.code or type(exc).__name__)
        raise
    state.metrics.record_call(tenant, method.lower(), time.perf_counter() - started)
    return envelope


# A check at save time waits less than a call: the caller is at a form, not in a sync job.
VERIFY_MAX_WAIT = 10.0


def check_webhook(base: str, rate_limit: dict[str, float] | None, *, client_id: int) -> dict[str, Any]:
    """``profile`` on a webhook that is not saved yet (``client_config.verify_webhook``): paced by
    the portal's bucket, retried like any read, the secret scrubbed from what comes back."""
    state = runtime()
    tenant = tenant_label(client_id)
    # Refused checks count like refused calls, per (tenant, portal host) whatever secret each try
    # names: a tenant trying webhook after webhook on a portal others share is stopped too.
    try:
        return _guarded_call(state, base, "profile", form_body(None), breaker_key="check:" + urlsplit(base).netloc,
                             tenant=tenant, bucket=state.bucket_for(rate_limit),
                             max_wait=min(VERIFY_MAX_WAIT, state.caller.policy.max_wait), repeatable=True)
    except Bitrix24Error as exc:
        log.info("bitrix24 webhook check failed for client %s: %s", client_id, exc)
        raise


def _scrub_secret(exc: Bitrix24Error, base: str, secret: str | None = None) -> None:
    """A portal (or a proxy before it) may echo the request URL in its error text: that URL holds
    the tenant's webhook secret (or, in app mode, the body its access token), which must reach
    neither our answer nor our logs."""
    if secret is None:
        secret = base.rstrip("/").rsplit("/", 1)[-1]
    if len(secret) < 1 or not isinstance(exc.description, str):
        return
    masked = mask(secret) or ""
    exc.description = exc.description.replace(base, mask_url(base) or "").replace(secret, masked)
    if exc.args:
        exc.args = (exc.description, *exc.args[1:])


def bx_batch(commands, *, client_id: int | None = None, halt: bool = False, max_wait: float | None = None):
    """Run many commands in ``batch`` requests of 50; see ``bulk.bx_batch``."""
    from .bulk import bx_batch as run

    return run(commands, client_id=client_id, halt=halt, max_wait=max_wait)


def bx_list_all(method: str, params: dict[str, Any] | None = None, *, client_id: int | None = None, mode: str = "auto"):
    """Every row a ``*.list`` method matches, as a generator; see ``bulk.bx_list_all``."""
    from .bulk import bx_list_all as run

    return run(method, params, client_id=client_id, mode=mode)
