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

import hmac
import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..runtime import runtime
from ..store import portal_domain
from .errors import Bitrix24Error
from .installations import ACTIVE, MEMBER_ID, RefreshRefused

log = logging.getLogger("flask_bitrix24")

_TOKEN = re.compile(r"[A-Za-z0-9_.-]{8,256}")
APP_EVENTS = frozenset({"ONAPPINSTALL", "ONAPPUNINSTALL", "ONAPPPAYMENT"})
BIND_MAX_WAIT = 5.0  # the install request waits this long at most for each binding call (the portal waits on us)


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
    version: int | None = None  # the installation's install count an uninstall was checked against

    def view(self) -> dict[str, Any]:
        return {"action": self.action, "member_id": self.member_id, "client_id": self.client_id,
                "status": self.status}


class VerificationPace:
    """The install handler is public. A flood of made-up installs must not make us hammer the OAuth
    server (which blocks apps that call it too often), and must not lock real installs out. So what
    is counted is *refused* verifications, per client address (an IPv6 address by its /64): at most
    ``per_address`` a minute, in this process. A real install from an address that is not failing
    always goes ahead (not counted per portal: whoever knows a portal's member_id could then block
    its installs)."""

    def __init__(self, per_address: int = 10) -> None:
        self.per_address = per_address
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _address_key(address: str | None) -> str:
        address = address or ""
        if ":" in address:  # IPv6: one network, not one of its 2**64 addresses
            return "ip6:" + ":".join(address.split(":")[:4])
        return "ip:" + address

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and now - times[0] >= 60.0:
            times.popleft()
        return times

    def take(self, address: str | None = None, member_id: str | None = None) -> None:
        """Refuse (429) when this address has failed too often this minute."""
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > 10_000:  # forget quiet keys
                self._failures = {k: t for k, t in self._failures.items() if t and now - t[-1] < 60.0}
            times = self._recent(self._address_key(address), now)
            if len(times) >= self.per_address:
                raise InstallRejected(429, "TOO_MANY_INSTALLS",
                                      "too many refused install requests from this address this minute: try again "
                                      "shortly", retry_after=max(1.0, 60.0 - (now - times[0])))

    def failed(self, address: str | None = None, member_id: str | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(self._address_key(address), now).append(now)


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


def _address() -> str | None:
    from flask import has_request_context, request

    return request.remote_addr if has_request_context() else None  # behind a proxy: ProxyFix makes it the client's


def _verify(rt: Any, refresh_token: str, member_id: str):
    """The pair the OAuth server gives for ``refresh_token``, which must belong to ``member_id``."""
    from .oauth import GrantMismatch

    rt.install_pace.take(_address(), member_id)
    try:
        return rt.oauth.refresh(refresh_token, member_id)
    except RefreshRefused:
        rt.install_pace.failed(_address(), member_id)
        raise
    except GrantMismatch:
        rt.install_pace.failed(_address(), member_id)
        raise InstallRejected(401, "INSTALL_NOT_VERIFIED", "the tokens of this install belong to another portal "
                                                           "than the one it names: nothing was stored") from None
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
        names = rt.event_names()
    else:
        names = [n.strip().upper() for n in setting.split(",") if n.strip()]
    # Ours to handle: ONAPPUNINSTALL always (it is how we learn the app was removed), never ONAPPINSTALL.
    return sorted({n for n in names if re.fullmatch(r"[A-Z0-9_]{1,128}", n)} - {"ONAPPINSTALL", "ONOFFLINEEVENT"}
                  | {"ONAPPUNINSTALL"})


def _connector(rt: Any, member_id: str) -> str:
    """The auth_connector this installation uses: BITRIX_APP_CONNECTOR where the portal's plan has the
    feature (``feature.get`` ``rest_auth_connector``,
    https://apidocs.bitrix24.com/api-reference/common/system/feature-get.html), else none."""
    from flask import current_app

    from .bitrix24_service import call_installation

    wanted = str(current_app.config.get("BITRIX_APP_CONNECTOR") or "").strip()
    if not wanted or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", wanted):
        return ""
    try:
        answer = call_installation(member_id, "feature.get", {"CODE": "rest_auth_connector"},
                                   max_wait=BIND_MAX_WAIT).get("result")
    except Bitrix24Error:
        return ""
    return wanted if isinstance(answer, dict) and answer.get("value") == "Y" else ""


def bind_events(member_id: str, event_url: str | None, install_url: str | None) -> dict[str, Any]:
    """Bind the wanted events (event.bind, https://apidocs.bitrix24.com/api-reference/events/event-bind.html):
    with ``BITRIX_APP_EVENT_DELIVERY=offline`` (the default) offline, on our connector, plus
    ONOFFLINEEVENT to ``event_url``; with ``online``, each to ``event_url``. ONAPPUNINSTALL always goes
    online to ``install_url``. What ``event.get`` shows bound already (a reinstall) is not bound again.
    A failure is logged, not fatal: the installation stands (the worker's drain still finds records)."""
    from flask import current_app

    from .bitrix24_service import call_installation
    from .bulk.batch import command_string

    rt = runtime()
    offline = str(current_app.config.get("BITRIX_APP_EVENT_DELIVERY", "offline")).lower() == "offline"
    try:
        connector = _connector(rt, member_id) if offline else ""
        rt.installations.set_values(member_id, connector=connector)
        rt.tokens.forget(member_id)  # its calls carry the connector from now on
        wanted: list[tuple[str, dict[str, Any]]] = []
        for name in wanted_events(rt):
            if name == "ONAPPUNINSTALL":
                if install_url:
                    wanted.append((name, {"event": name, "handler": install_url}))
            elif offline:
                bind = {"event": name, "event_type": "offline"}
                wanted.append((name, {**bind, "auth_connector": connector} if connector else bind))
            elif event_url:
                wanted.append((name, {"event": name, "handler": event_url}))
        if offline and event_url and len(wanted) > 1:
            minimum = int(current_app.config.get("BITRIX_OFFLINE_MIN_TIMEOUT", 1))
            wanted.append(("ONOFFLINEEVENT", {"event": "ONOFFLINEEVENT", "handler": event_url,
                                              "options": {"minTimeout": minimum}}))
        listed = call_installation(member_id, "event.get", max_wait=BIND_MAX_WAIT).get("result") or []
        have = {(str(b.get("event", "")).upper(), b.get("handler") or "", str(b.get("offline", 0)) in ("1", "true"))
                for b in listed if isinstance(b, dict)}
        missing = [(name, params) for name, params in wanted
                   if (name, params.get("handler") or "", params.get("event_type") == "offline") not in have]
        if not missing:
            return {"bound": [], "failed": [], "connector": connector}
        cmd = {f"b{i}": command_string("event.bind", params) for i, (_, params) in enumerate(missing[:50])}
        answer = call_installation(member_id, "batch", {"halt": 0, "cmd": cmd},
                                   max_wait=BIND_MAX_WAIT).get("result") or {}
        errors = answer.get("result_error") if isinstance(answer, dict) else None
        failed = sorted(errors) if isinstance(errors, dict) else []
        if failed:
            log.warning("bitrix24 app on %s: event.bind refused for %s", member_id,
                        [missing[int(k[1:])][0] for k in failed])
        return {"bound": [missing[int(k[1:])][0] for k in cmd if k not in failed],
                "failed": [missing[int(k[1:])][0] for k in failed], "connector": connector}
    except Bitrix24Error as exc:
        log.warning("bitrix24 app on %s: events not bound: %s", member_id, exc)
        return {"bound": [], "failed": ["*"], "error": exc.code}


def prove_access_token(rt: Any, inst: Any, access_token: str) -> bool:
    """Whether ``access_token`` is our app's, on this portal: ``app.info``
    (https://apidocs.bitrix24.com/api-reference/common/system/app-info.html) with it, sent to the
    installation's REST address, which the OAuth server gave us (never an address from the payload),
    must name our app (``CODE``: ``BITRIX_APP_CODE``, else ``BITRIX_APP_CLIENT_ID``, as a local app's
    code is). Any user of the portal who can open our app can read such a token (``BX24.getAuth()``),
    so this proof is only ever used where the installation has no application token at all; a kept
    one is replaced only by an install the OAuth server vouched for."""
    from flask import current_app

    from .wire import form_body

    if not inst.client_endpoint or not _text(access_token, _TOKEN):
        return False
    rt.event_pace.take(_address(), inst.member_id)
    try:
        envelope = rt.portals.for_base(inst.client_endpoint).call(
            inst.client_endpoint, "app.info", form_body({"auth": access_token}))
    except Bitrix24Error:
        envelope = {}
    result = envelope.get("result")
    code = str(current_app.config.get("BITRIX_APP_CODE") or rt.app_client_id or "")
    ours = isinstance(result, dict) and bool(code) and result.get("CODE") == code
    if not ours:
        rt.event_pace.failed(_address(), inst.member_id)
    return ours


def install_event(payload: dict[str, Any], urls: tuple[str | None, str | None] = (None, None)) -> InstallOutcome:
    """ONAPPINSTALL: verify, then store (or renew) the installation and its application token;
    ``urls`` are (events URL, install URL) to bind the app's events to.

    Its refresh token is checked with the OAuth server. When it carries none (as in the docs'
    example), or one already spent (the install page's, or the same delivery again), its application
    token is taken only for an installation we already hold and only with proof: it is the token we
    keep (a duplicate), or its access token works on the portal (``prove_access_token``)."""
    rt = _mode()
    auth = payload.get("auth") if isinstance(payload.get("auth"), dict) else {}
    member = _text(auth.get("member_id"), MEMBER_ID)
    app_token = _text(auth.get("application_token"), _TOKEN)
    if not member or not app_token:
        raise InstallRejected(400, "INVALID_INSTALL", "ONAPPINSTALL needs auth[member_id] and auth[application_token]")
    refresh = _text(auth.get("refresh_token"), _TOKEN)
    problem = None
    if refresh is not None:
        try:
            grant = _verify(rt, refresh, member)
        except RefreshRefused as exc:
            problem = exc.problem
        else:
            inst, created = rt.installations.install(grant, domain=portal_domain(grant.client_endpoint),
                                                     application_token=app_token)
            _forget(rt, member, inst.client_id)
            log.info("bitrix24 app %s on %s (%s)", "installed" if created else "reinstalled", inst.domain, member)
            bind_events(member, *urls)
            return InstallOutcome("installed" if created else "reinstalled", member, inst.client_id, inst.status,
                                  payload)
    existing = rt.installations.get(member, with_secrets=True)
    if existing is not None and existing.status == ACTIVE:
        kept = existing.secrets.get("application_token")
        if _same(app_token, kept):
            return InstallOutcome("duplicate", member, existing.client_id, existing.status)
        access = auth.get("access_token") if isinstance(auth.get("access_token"), str) else ""
        # Only where none is kept: replacing one takes a refresh the OAuth server accepted.
        if not kept and access and prove_access_token(rt, existing, access) \
                and rt.installations.set_application_token(member, app_token):
            _forget(rt, member, existing.client_id)
            return InstallOutcome("token_saved", member, existing.client_id, existing.status, payload)
    why = f"the OAuth server did not accept its tokens ({problem})" if problem else "it carries no tokens to check"
    raise InstallRejected(401, "INSTALL_NOT_VERIFIED", f"this ONAPPINSTALL could not be verified: {why}, and "
                                                       "no access token the portal takes: nothing was stored")


def install_page(form: dict[str, Any], query: dict[str, Any],
                 urls: tuple[str | None, str | None] = (None, None)) -> InstallOutcome:
    """The install page's POST (AUTH_ID, REFRESH_ID, member_id): verify and store the installation,
    bind its events (before the page calls installFinish, as the docs order it)."""
    rt = _mode()
    member = _text(form.get("member_id"), MEMBER_ID)
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
    member = _text(auth.get("member_id"), MEMBER_ID)
    given = _text(auth.get("application_token"), _TOKEN)
    inst = rt.installations.get(member, with_secrets=True) if member else None
    if inst is None or not _same(given, inst.secrets.get("application_token")):
        raise InstallRejected(401, "INVALID_TOKEN", "invalid application_token")
    return inst


def uninstall_event(payload: dict[str, Any]) -> InstallOutcome:
    """ONAPPUNINSTALL (https://apidocs.bitrix24.com/api-reference/common/events/on-app-uninstall.html):
    no token is kept; the client stays linked so its calls can say what happened."""
    rt = _mode()
    inst = _checked(rt, payload)
    outcome = InstallOutcome("uninstalled", inst.member_id, inst.client_id, "uninstalled", payload)
    outcome.version = inst.installs
    return outcome


def finish_uninstall(outcome: InstallOutcome) -> None:
    """After the event is logged (its token is checked once more there): drop the tokens, unless a
    reinstall stored new ones since the check."""
    rt = runtime()
    if not rt.installations.uninstall(outcome.member_id, installs=outcome.version):
        log.warning("bitrix24 app on %s: ONAPPUNINSTALL ignored, a reinstall came first", outcome.member_id)
        return
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

__all__ = [
    "APP_EVENTS",
    "INSTALL_PAGE",
    "InstallOutcome",
    "InstallRejected",
    "bind_events",
    "finish_uninstall",
    "install_event",
    "install_page",
    "payment_event",
    "resume",
    "uninstall_event",
    "wanted_events",
]
