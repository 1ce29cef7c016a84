"""App mode's tokens: the OAuth server client and the per-process broker that hands tokens to calls.

Bitrix24's rules (https://apidocs.bitrix24.com/settings/oauth/auto-renewal.html): an access token
lives an hour, a refresh token 180 days, and every refresh returns a new pair (save it). Refresh
only when a call is refused with ``expired_token``, then repeat the call: never before every call
or on a timer ("you risk having your application blocked"). All operations with the app's secret
go to the OAuth server (``BITRIX_OAUTH_SERVER``, https://oauth.bitrix.info/), never to a portal
(https://apidocs.bitrix24.com/settings/oauth/index.html).

:class:`TokenBroker` makes a refresh happen once however many calls meet the expired token at once:
threads of one process wait for the one renewing (and take its pair), and processes meet at the
row lock in :meth:`~.installations.InstallationStore.renew`, where the later ones find the pair
already replaced and take it without asking the OAuth server.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from .errors import PortalAuthFailed, PortalTimeout, ServerError, TransportError
from .installations import Grant, InstallationStore, RefreshRefused, Tokens
from .locks import LockTimeout
from .portal import USER_AGENT
from .webhook_rules import InvalidConfig, validate_client_endpoint

log = logging.getLogger("flask_bitrix24")

MOVED_REFRESH_SECONDS = 600.0  # a redirecting portal makes at most one refresh per installation in this time
MAX_TOKEN_ANSWER = 64 * 1024  # a token answer is a few hundred bytes
_TOKEN = 256  # longest token we accept (Bitrix24's are 32-70 characters)


def _text(value: Any, limit: int = _TOKEN) -> str | None:
    if isinstance(value, str) and value and len(value) <= limit and value.isascii() and value.isprintable():
        return value
    return None


class GrantMismatch(ServerError):
    """The OAuth server's answer is about another portal than the one asked about."""

    default_code = "GRANT_MISMATCH"


def parse_grant(data: Any, *, allowed_hosts: tuple[str, ...], expect_member: str | None = None) -> Grant:
    """A token answer (or the tokens of an install request), checked: both tokens, the portal's
    member_id (the one expected, when known) and a REST address on an allowed host."""
    if not isinstance(data, dict):
        raise ServerError("the OAuth server's answer is not a JSON object")
    access, refresh = _text(data.get("access_token")), _text(data.get("refresh_token"))
    member = _text(data.get("member_id"), 64)
    if not access or not refresh or not member:
        raise ServerError("the OAuth server's answer lacks access_token, refresh_token or member_id")
    if expect_member is not None and member != expect_member:
        raise GrantMismatch("the OAuth server answered for another portal than the one asked about")
    try:
        endpoint = validate_client_endpoint(data.get("client_endpoint"), allowed_hosts)
    except InvalidConfig as exc:
        raise ServerError(f"the token answer's client_endpoint is not usable: {exc}") from None
    expires = data.get("expires_in")
    try:
        expires_in = float(expires) if expires not in (None, "") else None
    except (TypeError, ValueError):
        expires_in = None
    scope = _text(data.get("scope"), 1024)
    return Grant(access, refresh, member, endpoint, expires_in=expires_in, scope=scope,
                 status=_text(data.get("status"), 8))


class OAuthClient:
    """``https://oauth.bitrix.info/oauth/token/`` (or ``BITRIX_OAUTH_SERVER``) for one app."""

    def __init__(self, server: str, client_id: str, client_secret: str, *, allowed_hosts: tuple[str, ...],
                 timeouts: tuple[float, float] = (3.05, 15.0), on_event: Callable[[str, dict], None] | None = None):
        self.token_url = server.rstrip("/") + "/oauth/token/"
        self.client_id, self._secret, self.allowed_hosts = client_id, client_secret, allowed_hosts
        self.timeouts = timeouts
        self.on_event = on_event or (lambda name, info: None)
        self.session = requests.Session()
        self.session.trust_env = False  # the query holds the app's secret: no proxy from the environment
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})

    def refresh(self, refresh_token: str, member_id: str | None = None) -> Grant:
        """A new pair for ``refresh_token``. ``RefreshRefused`` when the server says the grant is
        over (``invalid_grant``, ``PAYMENT_REQUIRED``); a ``Bitrix24Error`` for anything else."""
        try:
            grant = self._token({"grant_type": "refresh_token", "refresh_token": refresh_token}, member_id)
        except RefreshRefused as exc:
            self.on_event("oauth_refresh", {"result": exc.problem})
            raise
        except Exception:
            self.on_event("oauth_refresh", {"result": "error"})
            raise
        self.on_event("oauth_refresh", {"result": "ok"})
        return grant

    def _token(self, params: dict[str, str], member_id: str | None) -> Grant:
        # GET with the parameters in the query, as the docs show; the URL is never logged or raised.
        query = {**params, "client_id": self.client_id, "client_secret": self._secret}
        try:
            response = self.session.get(self.token_url, params=query, timeout=self.timeouts, allow_redirects=False,
                                        stream=True)
            try:
                content = response.raw.read(MAX_TOKEN_ANSWER + 1, decode_content=True)
            finally:
                response.close()
        except requests.exceptions.Timeout:
            raise PortalTimeout("the OAuth server did not answer in time", method="oauth/token") from None
        except requests.exceptions.RequestException as exc:
            raise TransportError(f"the OAuth server could not be reached ({type(exc).__name__})",
                                 method="oauth/token") from None
        try:
            data = json.loads(content) if len(content) <= MAX_TOKEN_ANSWER else None
        except (ValueError, RecursionError):
            data = None
        status = response.status_code
        if isinstance(data, dict) and data.get("error"):
            code = str(data.get("error"))[:64]
            text = str(data.get("error_description") or code)[:300]
            if code.lower() == "invalid_grant":
                raise RefreshRefused("invalid_grant", f"the OAuth server refused the refresh token: {text}")
            if code.upper() == "PAYMENT_REQUIRED":
                raise RefreshRefused("PAYMENT_REQUIRED", f"the OAuth server says: {text}")
            if code.lower() == "invalid_client":
                raise PortalAuthFailed(
                    "the OAuth server refused BITRIX_APP_CLIENT_ID / BITRIX_APP_CLIENT_SECRET (invalid_client): "
                    "copy both from the app's card in the portal (or the partner area)",
                    code="OAUTH_INVALID_CLIENT", http_status=status, method="oauth/token")
            raise ServerError(f"the OAuth server refused the request: {code}: {text}", code=code,
                              http_status=status, method="oauth/token")
        if status != 200:
            raise ServerError(f"the OAuth server answered HTTP {status}", http_status=status, method="oauth/token")
        return parse_grant(data, allowed_hosts=self.allowed_hosts, expect_member=member_id)

    def close(self) -> None:
        self.session.close()


class TokenBroker:
    """The access token each installation's calls use, kept per process, and single-flight renewal."""

    def __init__(self, store: Callable[[], InstallationStore], oauth: OAuthClient) -> None:
        self._store, self.oauth = store, oauth
        self._cache: dict[str, Tokens] = {}
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def current(self, member_id: str) -> Tokens:
        store = self._store()
        if member_id in store.unsaved:
            store.flush_unsaved(member_id)
        tokens = self._cache.get(member_id)
        if tokens is None:
            tokens = self._cache[member_id] = store.tokens(member_id)
        return tokens

    def _lock(self, member_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(member_id, threading.Lock())

    def renew(self, member_id: str, used: Tokens, reason: str = "expired", *, wait: float = 20.0) -> Tokens:
        """The pair to use after ``used`` was refused (``reason``): the one another thread or process
        stored meanwhile, else a new one (one refresh, whoever else is waiting).

        - ``expired`` (``expired_token``): refresh when no newer pair is stored;
        - ``invalid`` (``invalid_token``): only take a newer stored pair, never ask the OAuth server
          (the docs have refreshes on an expired token only);
        - ``moved`` (the portal redirects: renamed?): refresh to learn its address from the OAuth
          server, at most once per ``MOVED_REFRESH_SECONDS`` per installation (kept in its row, so
          for every process).
        Waits at most ``wait`` seconds for a refresh another thread or process is making."""
        deadline = time.monotonic() + wait
        lock = self._lock(member_id)
        if not lock.acquire(timeout=wait):
            raise LockTimeout(f"the app's token refresh for {member_id} took longer than {wait:.0f} s")
        try:
            cached = self._cache.get(member_id)
            if cached is not None and cached.access_token != used.access_token:
                if reason != "moved" or cached.client_endpoint != used.client_endpoint:
                    return cached  # renewed by another thread while this one waited
            force = False
            if reason == "moved":
                if not self._store().address_check_due(member_id, MOVED_REFRESH_SECONDS):
                    return used  # the OAuth server was asked about this portal's address lately
                force = True
            try:
                tokens, refreshed = self._store().renew(
                    member_id, used.access_token, lambda token: self.oauth.refresh(token, member_id),
                    may_refresh=reason == "expired", force=force, wait=max(0.1, deadline - time.monotonic()))
            except Exception:
                self._cache.pop(member_id, None)
                raise
            if refreshed:
                log.info("bitrix24 app tokens refreshed for portal %s (%s)", member_id, reason)
            self._cache[member_id] = tokens
            return tokens
        finally:
            lock.release()

    def forget(self, member_id: str | None = None) -> None:
        if member_id is None:
            self._cache.clear()
        else:
            self._cache.pop(member_id, None)


__all__ = ["GrantMismatch", "OAuthClient", "TokenBroker", "parse_grant"]
