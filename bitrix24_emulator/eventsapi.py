"""Event binding methods: ``events``, ``event.bind``, ``event.unbind``, ``event.get`` and the offline
queue (``event.offline.get/clear/error/list``).

What an inbound webhook may do with them: nothing. Every one of these methods works "only in the
context of application authorization" (https://apidocs.bitrix24.com/api-reference/events/event-bind.html,
https://apidocs.bitrix24.com/api-reference/events/event-get.html,
https://apidocs.bitrix24.com/api-reference/events/event-unbind.html,
https://apidocs.bitrix24.com/api-reference/events/events.html); the portal's source
(modules/rest/lib/api/event.php) starts each of them by refusing any credential but an OAuth token
with 403 ``WRONG_AUTH_TYPE`` "Current authorization type is denied for this method", and the offline
methods are also admin-only (403 ``ACCESS_DENIED`` "Access denied!")
(https://apidocs.bitrix24.com/api-reference/events/offline-events.html,
https://apidocs.bitrix24.com/api-reference/events/event-offline-get.html). The official Python SDK runs
its event and offline-event tests for OAuth only (b24pysdk tests/integration/scopes/event/). The refusal
comes from inside the method, so the call has taken its place in the bucket. These methods need no
scope (``basic``).

A webhook's events go to the portal's outbound webhook instead, which an administrator sets up in the
portal's settings: ``event_url=`` / ``--event-url`` (bound to every event the portal raises) or
``emulator.bind_event(event, url)`` (see events.py).

The application side (``context["auth_type"] == "oauth"``, with ``app_id``, ``user_id``, ``admin``,
``auth_connector`` and the application's ``scopes``), reached with an access token (oauth.py), follows
the source: it binds, lists and unbinds in the portal's handler table, and may bind the events of its
scope. An offline binding fills the queue of its (application, ``auth_connector``), which
``event.offline.get/clear/error/list`` serve (offline.py); ``clear=0`` needs the portal's
``rest_offline_extended`` feature (``offline_extended=``, else 403 ``WRONG_LICENSE``).
"""

from __future__ import annotations

from .errors import ApiError
from .events import DuplicateBinding

METHODS = frozenset({"events", "event.bind", "event.unbind", "event.get", "event.offline.get",
                     "event.offline.clear", "event.offline.error", "event.offline.list"})
SCOPES = {name: "basic" for name in METHODS}

# The events an app may bind, by the scope it needs (from the portal's list in
# https://apidocs.bitrix24.com/api-reference/events/events.html, for the scopes the emulator has; the
# per-type ONCRMDYNAMICITEMADD_<entityTypeId> forms are not listed). Binding one the emulator never
# raises is harmless: nothing is sent.
# ONOFFLINEEVENT takes options {minTimeout: int} and cannot itself be bound offline
# (https://apidocs.bitrix24.com/api-reference/events/on-offline-event.html).
_CHANGES = ("ADD", "UPDATE", "DELETE")
EVENT_SCOPES = {
    "basic": ("ONAPPUNINSTALL", "ONAPPINSTALL", "ONAPPUPDATE", "ONAPPTEST", "ONOFFLINEEVENT"),
    "crm": (
        *(f"ONCRM{e}{a}" for e in ("LEAD", "DEAL", "CONTACT", "COMPANY", "DYNAMICITEM") for a in _CHANGES),
        "ONCRMDEALMOVETOCATEGORY",
        *(f"ONCRM{e}USERFIELD{a}" for e in ("LEAD", "DEAL", "CONTACT", "COMPANY", "QUOTE", "INVOICE", "REQUISITE")
          for a in (*_CHANGES, "SETENUMVALUES")),
        *(f"ONCRM{e}{a}" for e in ("QUOTE", "INVOICE", "ACTIVITY", "CURRENCY", "PRODUCT", "PRODUCTPROPERTY",
                                   "PRODUCTSECTION", "REQUISITE", "BANKDETAIL", "MEASURE", "TIMELINECOMMENT",
                                   "TYPE") for a in _CHANGES),
        "ONCRMINVOICESETSTATUS"),
    "task": ("ONTASKADD", "ONTASKUPDATE", "ONTASKDELETE", "ONTASKCOMMENTADD", "ONTASKCOMMENTUPDATE",
             "ONTASKCOMMENTDELETE"),
    "user": ("ONUSERADD",),
}
EVENT_OPTIONS = {"ONOFFLINEEVENT": {"minTimeout": int}}
NO_OFFLINE = frozenset({"ONOFFLINEEVENT"})


def wrong_auth_type() -> ApiError:
    return ApiError("WRONG_AUTH_TYPE", "Current authorization type is denied for this method", 403)


def access_denied(reason: str = "") -> ApiError:
    return ApiError("ACCESS_DENIED", "Access denied!" + (f" {reason}" if reason else ""), 403)


def argument_null(name: str) -> ApiError:
    return ApiError("ERROR_ARGUMENT", f"Argument '{name}' is null or empty", 400, argument=name)


def events_of(scopes) -> list[str]:
    """The event names an app with ``scopes`` may bind (``basic`` always)."""
    names: list[str] = []
    for scope in ("basic", *scopes):
        for name in EVENT_SCOPES.get(scope, ()):
            if name not in names:
                names.append(name)
    return names


def call(method, params, portal, context):
    if context.get("auth_type", "webhook") != "oauth":
        raise wrong_auth_type()
    app = _App(portal, context)
    query = {str(k).upper(): v for k, v in params.items()}
    if method == "events":
        return _events(query, app.scopes)
    if method == "event.bind":
        return _bind(query, portal, app)
    if method == "event.unbind":
        return _unbind(query, portal, app)
    if method == "event.get":
        rows = portal.handlers.bindings(app.app_id, any_app=False)
        return [b.listed() for b in rows if app.admin or b.user_id == app.user_id]
    if not app.admin:
        raise access_denied()
    queues = portal.offline
    if method == "event.offline.get":
        return queues.get(app.app_id, app.connector, params, portal.features["rest_offline_extended"])
    if method == "event.offline.clear":
        return queues.clear(app.app_id, app.connector, params)
    if method == "event.offline.error":
        return queues.error(app.app_id, app.connector, params)
    return queues.list(app.app_id, app.connector, params)


class _App:
    def __init__(self, portal, context):
        self.app_id = context.get("app_id")
        self.user_id = int(context.get("user_id", portal.user_id))
        self.admin = bool(context.get("admin", True))
        self.connector = str(context.get("auth_connector") or "")
        self.scopes = context.get("scopes", portal.scopes)  # the application's scope (oauth.py)


def _events(query, scopes) -> list[str]:
    if "SCOPE" in query:
        scope = query["SCOPE"]
        return events_of([scope]) if isinstance(scope, str) and scope != "" else events_of([])
    if str(query.get("FULL", "")).lower() in ("1", "true", "y"):
        return events_of(EVENT_SCOPES)
    return events_of(scopes)


def _event_type(query) -> str:
    event_type = str(query.get("EVENT_TYPE") or "").lower()
    if event_type == "":
        return "online"
    if event_type not in ("online", "offline"):
        raise ApiError("ERROR_ARGUMENT", "Value must be one of {online|offline}", 400, argument="EVENT_TYPE")
    return event_type


def _int(value) -> int:
    try:
        return int(str(value).strip() or 0)
    except ValueError:
        return 0


def _bind(query, portal, app) -> bool:
    name = str(query.get("EVENT") or "").upper()
    user_id = _int(query.get("AUTH_TYPE"))
    handler = str(query.get("HANDLER") or "")
    options = query.get("OPTIONS") if isinstance(query.get("OPTIONS"), dict) else {}
    if user_id > 0:
        if not app.admin and user_id != app.user_id:
            raise access_denied("Event binding with AUTH_TYPE requires administrator access rights")
    elif not app.admin:
        user_id = app.user_id
    if name == "":
        raise argument_null("EVENT")
    if _event_type(query) == "offline":
        if not app.admin:
            raise access_denied("Offline events binding requires administrator access rights")
        handler, user_id = "", 0
    elif handler == "":
        raise argument_null("HANDLER")
    if name not in events_of(app.scopes):
        raise ApiError("ERROR_EVENT_NOT_FOUND", "Event not found", 400)
    if handler == "" and name in NO_OFFLINE:
        raise ApiError("ERROR_ARGUMENT", "Offline event cannot be registered for this event.", 400)
    kept = {}
    for key, kind in EVENT_OPTIONS.get(name, {}).items():
        if key in options:
            kept[key] = _int(options[key]) if kind is int else options[key]
    try:
        portal.handlers.bind(name, handler, user_id=user_id, app_id=app.app_id,
                             connector_id=app.connector if handler == "" else "", options=kept)
    except DuplicateBinding as err:
        raise ApiError("ERROR_CORE", f"Unable to set event handler: {err}", 400) from None
    return True


def _unbind(query, portal, app) -> dict:
    name = str(query.get("EVENT") or "").upper()
    handler = str(query.get("HANDLER") or "")
    if name == "":
        raise argument_null("EVENT")
    offline = _event_type(query) == "offline"
    if offline:
        if not app.admin:
            raise access_denied("Offline events unbinding requires administrator access rights")
        handler = ""
    elif handler == "":
        raise argument_null("HANDLER")
    criteria = {"app_id": app.app_id}
    if offline:
        criteria["connector_id"] = app.connector
    elif "AUTH_TYPE" in query:
        if not app.admin and _int(query["AUTH_TYPE"]) != app.user_id:
            raise access_denied("Event unbinding with AUTH_TYPE requires administrator access rights")
        criteria["user_id"] = _int(query["AUTH_TYPE"])
    elif not app.admin:
        criteria["user_id"] = app.user_id
    return {"count": portal.handlers.unbind(name, handler, **criteria)}
