"""App mode's install handler: what Bitrix24 posts when a portal installs, pays for or removes our app.

Three shapes reach ``POST <prefix>/app/install`` (the app's "handler path" / "initial installation
path"):

- the **install page** an administrator's browser opens for an app with an interface
  (``AUTH_ID``, ``REFRESH_ID``, ``member_id`` in the form, ``DOMAIN`` in the query:
  https://apidocs.bitrix24.com/settings/app-installation/local-apps/installation-master.html). We
  store the installation and answer a page that calls ``BX24.installFinish()``: until it is called
  the portal sends the app no events
  (https://apidocs.bitrix24.com/settings/app-installation/installation-finish.html);
- **ONAPPINSTALL**, an event with ``auth[...]``: for an app "that uses only the API" it is the whole
  installation, tokens included
  (https://apidocs.bitrix24.com/settings/app-installation/local-apps/installation-callback.html), and
  it carries the ``application_token`` every later event is checked with
  (https://apidocs.bitrix24.com/api-reference/common/events/on-app-install.html);
- **ONAPPUNINSTALL** (no tokens; checked by the stored application token) and **ONAPPPAYMENT**.

Nothing in a payload is trusted until the OAuth server vouches for it: the tokens an install carries
are refreshed once at ``BITRIX_OAUTH_SERVER`` with our client secret, and the answer names the
portal (``member_id``) and its REST address. A forged install (made-up tokens, or another portal's
member_id) is refused and stored nowhere; no address from a payload is ever called. An install whose
tokens were already used (the same ONAPPINSTALL delivered twice) is a duplicate when it names the
application token we hold. Every app event is then logged and dispatched like any event, so a host's
``@bitrix24.on("ONAPPINSTALL")`` handler runs.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..models.mixins import utcnow
from ..runtime import runtime
from ..store import portal_domain
from .errors import Bitrix24Error
from .installations import ACTIVE, RefreshRefused

log = logging.getLogger("flask_bitrix24")

_MEMBER_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TOKEN = re.compile(r"[A-Za-z0-9_.-]{8,256}")
APP_EVENTS = frozenset({"ONAPPINSTALL", "ONAPPUNINSTALL", "ONAPPPAYMENT"})


class InstallRejected(Exception):
    """Answered as ``{"error": code, "error_description": ...}`` with ``status``; nothing stored."""

    def __init__(self, status: int, code: str, description: str, retry_after: float | None = None) -> None:
        super().__init__(description)
        self.status, self.code, self.description, self.retry_after = status, code, description, retry_after


@dataclass
class InstallOutcome:
    action: str  # installed | reinstalled | duplicate | token_saved | uninstalled | resumed | page
    member_id: str
    client_id: int | None = None
    status: str | None = None
    payload: dict[str, Any] | None = None  # the event to log and dispatch, when there is one

    def view(self) -> dict[str, Any]:
        return {"action": self.action, "member_id": self.member_id, "client_id": self.client_id,
                "status": self.status}


class VerificationPace:
    """At most ``per_minute`` install verifications a minute in this process: the handler is public,
    and a flood of made-up tokens must not make us hammer the OAuth server (which blocks apps that
    call it too often)."""

    def __init__(self, per_minute: int = 30) -> None:
        self.per_minute = per_minute
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def take(self) -> None:
        now = time.monotonic()
        with self._lock:
            while self._times and now - self._times[0] >= 60.0:
                self._times.popleft()
            if len(self._times) >= self.per_minute:
                wait = 60.0 - (now - self._times[0])
                raise InstallRejected(429, "TOO_MANY_INSTALLS",
                                      "too many install requests to verify this minute: try again shortly",
                                      retry_after=max(1.0, wait))
            self._times.append(now)


def _mode():
    rt = runtime()
    if not rt.app_mode:
        raise InstallRejected(404, "APP_MODE_OFF",
                              "app mode is off: set BITRIX_APP_CLIENT_ID and BITRIX_APP_CLIENT_SECRET")
    return rt


def _text(value: Any, pattern: re.Pattern[str]) -> str | None:
    return value if isinstance(value, str) and pattern.fullmatch(value) else None


def _same(given: str | None, expected: str | None) -> bool:
    return bool(given and expected) and hmac.compare_digest(given.encode(), expected.encode())  # type: ignore[union-attr]


def _verify(rt: Any, refresh_token: str, member_id: str):
    """The pair the OAuth server gives for ``refresh_token``, which must belong to ``member_id``."""
    rt.install_pace.take()
    try:
        return rt.oauth.refresh(refresh_token, member_id)
    except RefreshRefused:
        raise
    except Bitrix24Error as exc:
        if exc.code == "OAUTH_INVALID_CLIENT":
            raise InstallRejected(503, "OAUTH_INVALID_CLIENT", exc.description) from None
        raise InstallRejected(
            503, "OAUTH_UNAVAILABLE",
            f"the install could not be checked with the OAuth server ({exc.description}): nothing was stored; "
            "install the app again once it answers", retry_after=60) from None


def _forget(rt: Any, member_id: str, client_id: int | None) -> None:
    from .client_config import forget_target

    rt.tokens.forget(member_id)
    if client_id is not None:
        forget_target(client_id)


def wanted_events(rt: Any) -> list[str]:
    """``BITRIX_APP_EVENTS``: "auto" (the events our handlers are registered for), a list, or none."""
    from flask import current_app

    setting = str(current_app.config.get("BITRIX_APP_EVENTS", "auto") or "").strip()
    if setting.lower() == "auto":
        names = rt.hooks.event_names()
    else:
        names = [n.strip().upper() for n in setting.split(",") if n.strip()]
    # Ours to handle: ONAPPUNINSTALL always (it is how we learn the app was removed), never ONAPPINSTALL.
    return sorted({n for n in names if re.fullmatch(r"[A-Z0-9_]{1,128}", n)} - {"ONAPPINSTALL"} | {"ONAPPUNINSTALL"})


def bind_events(member_id: str, event_url: str | None, install_url: str | None) -> dict[str, Any]:
    """Bind the wanted events to ``event_url`` and ONAPPUNINSTALL to ``install_url`` (event.bind,
    https://apidocs.bitrix24.com/api-reference/events/event-bind.html), skipping what ``event.get``
    shows bound already (a reinstall). A failure is logged, not fatal: the installation stands."""
    from .bitrix24_service import call_installation
    from .bulk.batch import command_string

    rt = runtime()
    wanted = [(name, install_url if name == "ONAPPUNINSTALL" else event_url) for name in wanted_events(rt)]
    wanted = [(name, url) for name, url in wanted if url]
    if not wanted:
        return {"bound": [], "failed": []}
    try:
        listed = call_installation(member_id, "event.get").get("result") or []
        have = {(str(b.get("event", "")).upper(), b.get("handler")) for b in listed if isinstance(b, dict)}
        missing = [(name, url) for name, url in wanted if (name, url) not in have]
        if not missing:
            return {"bound": [], "failed": []}
        cmd = {f"b{i}": command_string("event.bind", {"event": name, "handler": url})
               for i, (name, url) in enumerate(missing[:50])}
        answer = call_installation(member_id, "batch", {"halt": 0, "cmd": cmd}).get("result") or {}
        errors = answer.get("result_error") if isinstance(answer, dict) else None
        failed = sorted(errors) if isinstance(errors, dict) else []
        bound = [missing[int(k[1:])][0] for k in cmd if k not in failed]
        if failed:
            log.warning("bitrix24 app on %s: event.bind refused for %s", member_id, failed)
        return {"bound": bound, "failed": [missing[int(k[1:])][0] for k in failed]}
    except Bitrix24Error as exc:
        log.warning("bitrix24 app on %s: events not bound: %s", member_id, exc)
        return {"bound": [], "failed": [name for name, _ in wanted], "error": exc.code}


def install_event(payload: dict[str, Any], urls: tuple[str | None, str | None] = (None, None)) -> InstallOutcome:
    """ONAPPINSTALL: verify, then store (or renew) the installation and its application token;
    ``urls`` are (events URL, install URL) to bind the app's events to."""
    rt = _mode()
    auth = payload.get("auth") if isinstance(payload.get("auth"), dict) else {}
    member = _text(auth.get("member_id"), _MEMBER_ID)
    app_token = _text(auth.get("application_token"), _TOKEN)
    if not member or not app_token:
        raise InstallRejected(400, "INVALID_INSTALL", "ONAPPINSTALL needs auth[member_id] and auth[application_token]")
    refresh = _text(auth.get("refresh_token"), _TOKEN)
    existing = rt.installations.get(member, with_secrets=True)
    if refresh is None:
        return _token_only_install(rt, member, app_token, existing, payload)
    try:
        grant = _verify(rt, refresh, member)
    except RefreshRefused as exc:
        if existing is not None and existing.status == ACTIVE and _same(app_token,
                                                                         existing.secrets.get("application_token")):
            # The same ONAPPINSTALL again (its tokens are used up): done already.
            return InstallOutcome("duplicate", member, existing.client_id, existing.status)
        raise InstallRejected(401, "INSTALL_NOT_VERIFIED",
                              f"the OAuth server did not accept this install's tokens ({exc.problem}): "
                              "nothing was stored") from None
    inst, created = rt.installations.install(grant, domain=portal_domain(grant.client_endpoint),
                                             application_token=app_token)
    _forget(rt, member, inst.client_id)
    log.info("bitrix24 app %s on %s (%s)", "installed" if created else "reinstalled", inst.domain, member)
    bind_events(member, *urls)
    return InstallOutcome("installed" if created else "reinstalled", member, inst.client_id, inst.status, payload)


def _token_only_install(rt: Any, member: str, app_token: str, existing: Any, payload: dict) -> InstallOutcome:
    """An ONAPPINSTALL without tokens (the docs' example has none) only completes an install the
    install page made moments before and that has no application token yet: trust on first use,
    within ``BITRIX_APP_INSTALL_WINDOW`` seconds."""
    if existing is not None and _same(app_token, existing.secrets.get("application_token")):
        return InstallOutcome("duplicate", member, existing.client_id, existing.status)
    installed_at = existing.installed_at if existing is not None else None
    if installed_at is not None and installed_at.tzinfo is None:
        installed_at = installed_at.replace(tzinfo=dt.UTC)
    fresh = installed_at is not None and (utcnow() - installed_at).total_seconds() <= rt.app_install_window
    if existing is None or existing.status != ACTIVE or existing.has_application_token or not fresh:
        raise InstallRejected(
            401, "INSTALL_NOT_VERIFIED",
            "an ONAPPINSTALL without tokens is taken only right after the install page of the same portal: "
            "nothing was stored")
    rt.installations.set_application_token(member, app_token)
    return InstallOutcome("token_saved", member, existing.client_id, existing.status, payload)


def install_page(form: dict[str, Any], query: dict[str, Any],
                 urls: tuple[str | None, str | None] = (None, None)) -> InstallOutcome:
    """The install page's POST (AUTH_ID, REFRESH_ID, member_id): verify and store the installation,
    bind its events (before the page calls installFinish, as the docs order it)."""
    rt = _mode()
    member = _text(form.get("member_id"), _MEMBER_ID)
    refresh = _text(form.get("REFRESH_ID"), _TOKEN)
    if not member or not refresh:
        raise InstallRejected(400, "INVALID_INSTALL", "the install request needs member_id and REFRESH_ID")
    try:
        grant = _verify(rt, refresh, member)
    except RefreshRefused as exc:
        raise InstallRejected(401, "INSTALL_NOT_VERIFIED",
                              f"the OAuth server did not accept this install's tokens ({exc.problem}): "
                              "nothing was stored") from None
    inst, created = rt.installations.install(grant, domain=portal_domain(grant.client_endpoint),
                                             application_token=None)
    _forget(rt, member, inst.client_id)
    log.info("bitrix24 app install page for %s (%s)", inst.domain, member)
    bind_events(member, *urls)
    return InstallOutcome("page", member, inst.client_id, inst.status)


def _checked(rt: Any, payload: dict[str, Any]) -> Any:
    """The installation an app event names, when the event carries its application token."""
    auth = payload.get("auth") if isinstance(payload.get("auth"), dict) else {}
    member = _text(auth.get("member_id"), _MEMBER_ID)
    given = auth.get("application_token") if isinstance(auth.get("application_token"), str) else None
    inst = rt.installations.get(member, with_secrets=True) if member else None
    if inst is None or not _same(given, inst.secrets.get("application_token")):
        raise InstallRejected(401, "INVALID_TOKEN", "invalid application_token")
    return inst


def uninstall_event(payload: dict[str, Any]) -> InstallOutcome:
    """ONAPPUNINSTALL (https://apidocs.bitrix24.com/api-reference/common/events/on-app-uninstall.html):
    no token is kept; the client stays linked so its calls can say what happened."""
    rt = _mode()
    inst = _checked(rt, payload)
    return InstallOutcome("uninstalled", inst.member_id, inst.client_id, "uninstalled", payload)


def finish_uninstall(outcome: InstallOutcome) -> None:
    """After the event is logged (its token is checked once more there): drop the tokens."""
    rt = runtime()
    rt.installations.uninstall(outcome.member_id)
    _forget(rt, outcome.member_id, outcome.client_id)
    log.info("bitrix24 app uninstalled from %s", outcome.member_id)


def payment_event(payload: dict[str, Any]) -> InstallOutcome:
    """ONAPPPAYMENT: an installation stopped by PAYMENT_REQUIRED may call again."""
    rt = _mode()
    inst = _checked(rt, payload)
    resumed = rt.installations.resume(inst.member_id)
    if resumed:
        _forget(rt, inst.member_id, inst.client_id)
    return InstallOutcome("resumed" if resumed else "paid", inst.member_id, inst.client_id,
                          ACTIVE if resumed else inst.status, payload)


def resume(member_id: str) -> InstallOutcome | None:
    """``POST .../app/installations/<member_id>/resume``: after a payment, let calls try again."""
    rt = _mode()
    inst = rt.installations.get(member_id)
    if inst is None:
        return None
    if rt.installations.resume(member_id):
        _forget(rt, member_id, inst.client_id)
        inst = rt.installations.get(member_id)
    return InstallOutcome("resumed" if inst.status == ACTIVE else "unchanged", member_id, inst.client_id, inst.status)


INSTALL_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Installing</title>
<script src="//api.bitrix24.com/api/v1/"></script></head>
<body><p>The app is installed. Finishing&hellip;</p>
<script>BX24.init(function () { BX24.installFinish(); });</script>
</body></html>
"""

__all__ = ["APP_EVENTS", "INSTALL_PAGE", "bind_events", "wanted_events", "InstallOutcome", "InstallRejected", "finish_uninstall", "install_event",
           "install_page", "payment_event", "resume", "uninstall_event"]
