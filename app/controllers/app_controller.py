"""App mode's endpoints: the install handler Bitrix24 posts to, and the installations list for ops.

``POST <prefix>/app/install`` is public like the event receiver (Bitrix24 cannot send our API key);
each shape it takes is verified in ``services.app_install``. Any other event posted there is
received like ``POST <prefix>/webhook``, so the app may use one URL for everything.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, current_app, jsonify, request, url_for

from ..runtime import runtime
from ..services import app_install
from . import bitrix24_controller
from .errors import ApiError, error_response, retry_after_header

log = logging.getLogger("flask_bitrix24")


def _rejected(exc: app_install.InstallRejected) -> Response:
    headers = {"Retry-After": retry_after_header(exc.retry_after)} if exc.retry_after else {}
    return error_response(exc.status, exc.code, exc.description, headers)


def _urls() -> tuple[str, str]:
    """Where the app's events go (BITRIX_APP_EVENT_URL, else our /webhook on the host Bitrix24 called)
    and where ONAPPUNINSTALL goes (this handler)."""
    rt = runtime()
    events = current_app.config.get("BITRIX_APP_EVENT_URL") or url_for(rt.endpoint("receive_event"), _external=True)
    install = url_for(rt.endpoint("app_install"), _external=True)
    for url in (events, install):
        if not url.startswith("https://") and not request.host.startswith(("127.", "localhost", "[::1]")):
            # Bitrix24 posts events only to public https; behind a proxy, tell Flask (ProxyFix) or set the URL.
            log.warning("bitrix24 app events are bound to %s, which is not https: set BITRIX_APP_EVENT_URL "
                        "or put werkzeug's ProxyFix in front of the app", url)
    return events, install


def install_view():
    """Bitrix24's install request, ONAPPINSTALL, ONAPPUNINSTALL, ONAPPPAYMENT (and any other event)."""
    payload = bitrix24_controller._event_payload()
    event = payload.get("event")
    name = event.strip().upper() if isinstance(event, str) else ""
    try:
        if not name:
            if "REFRESH_ID" in payload or "AUTH_ID" in payload:
                app_install.install_page(payload, request.args.to_dict(), _urls())
                return Response(app_install.INSTALL_PAGE, mimetype="text/html")
            raise app_install.InstallRejected(
                400, "INVALID_INSTALL", "not an install request: Bitrix24 posts AUTH_ID/REFRESH_ID/member_id, or an "
                                        "event (event=ONAPPINSTALL, auth[...])")
        if name not in app_install.APP_EVENTS:
            return bitrix24_controller._receive(None, payload)
        if name == "ONAPPINSTALL":
            outcome = app_install.install_event(payload, _urls())
        elif name == "ONAPPUNINSTALL":
            outcome = app_install.uninstall_event(payload)
        else:
            outcome = app_install.payment_event(payload)
    except app_install.InstallRejected as exc:
        return _rejected(exc)
    if outcome.payload is None:  # a duplicate: nothing new to log
        return jsonify({"result": outcome.view()})
    response = bitrix24_controller._receive(None, outcome.payload, extra=outcome.view())
    if outcome.action == "uninstalled" and response.status_code < 300:
        app_install.finish_uninstall(outcome)
    return response


def _installation_or_404(member_id: str):
    rt = runtime()
    if not rt.app_mode:
        raise ApiError(404, "APP_MODE_OFF", "app mode is off: set BITRIX_APP_CLIENT_ID and BITRIX_APP_CLIENT_SECRET")
    inst = rt.installations.get(member_id)  # None for text no member_id has
    if inst is None:
        raise ApiError(404, "INSTALLATION_NOT_FOUND", f"no installation on a portal with member_id {member_id!r}")
    return inst


def list_installations() -> dict[str, Any]:
    """Every portal the app is installed on (no secret), to find the member_id a client is linked to."""
    rt = runtime()
    if not rt.app_mode:
        raise ApiError(404, "APP_MODE_OFF", "app mode is off: set BITRIX_APP_CLIENT_ID and BITRIX_APP_CLIENT_SECRET")
    return {"result": [inst.view() for inst in rt.installations.all()]}


def get_installation(member_id: str) -> dict[str, Any]:
    return {"result": _installation_or_404(member_id).view()}


def resume_installation(member_id: str) -> dict[str, Any]:
    """After the app's subscription on the portal is paid: let calls try again."""
    _installation_or_404(member_id)
    app_install.resume(member_id)
    return {"result": runtime().installations.get(member_id).view()}
