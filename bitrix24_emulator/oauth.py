"""The OAuth side of one Bitrix24 application on a portal: its installation, its tokens and the
authorization server that renews them.

One application (``app=(client_id, client_secret)``, ``--app CLIENT_ID:CLIENT_SECRET``) can be installed on
the portal; with several portals the same application exists on each of them, installed on each on its
own. Each portal keeps its own :class:`OAuth` state: whether the application is installed, its
``application_token``, its scope, and the token pairs issued on this portal.

**Tokens.** An access token lives ``access_ttl`` seconds (3600, "lifespan — 1 hour"), a refresh token
180 days (https://apidocs.bitrix24.com/settings/oauth/auto-renewal.html). A refresh gives a new pair;
the refresh token used is gone at once and so is the access token of the pair it belonged to, while
every other pair (the install page's, the installation event's, another refresh's) is left alone.

**The authorization server** (``/oauth/token/`` on the emulator's own host, in place of
``https://oauth.bitrix.info/oauth/token/``) takes ``grant_type=refresh_token`` with ``client_id``,
``client_secret`` and ``refresh_token``, in the query (GET) or a form (POST), and answers the JSON of
https://apidocs.bitrix24.com/settings/oauth/auto-renewal.html, where ``domain`` names the
authorization server (``oauth.bitrix.info`` on the cloud, here the emulator's host) and
``client_endpoint`` the portal. Its errors are those of
https://apidocs.bitrix24.com/settings/oauth/error-codes.html (``invalid_request``, ``invalid_client``,
``invalid_grant``) and ``PAYMENT_REQUIRED`` "Payment required" (auto-renewal.html, which gives no HTTP
status: 400 here, as the other refusals of a grant). A grant type the server does not know is
``unsupported_grant_type`` (the docs list none for it; RFC 6749's code, in the style of the
server's other lower-case codes). ``grant_type=authorization_code`` is refused with
``invalid_grant``: this emulator issues no codes (https://apidocs.bitrix24.com/settings/oauth/index.html).

**REST with a token** (``/rest/<method>`` with ``auth=<access_token>``, ``access_token=`` or
``Authorization: Bearer``): no token is 401 ``NO_AUTH_FOUND``, an unknown or superseded one 401
``invalid_token`` "Unable to get application by token", an expired one 401 ``expired_token`` "The
access token provided has expired." (https://apidocs.bitrix24.com/error-codes.html), then, in
payment-required mode, 401 ``PAYMENT_REQUIRED`` (``app.info`` still answers: it is where an app reads
``PAYMENT_EXPIRED``, https://apidocs.bitrix24.com/settings/oauth/simple-way.html), then the
application's scope, whose refusal ends "provided by the access token" (error-codes.html).

**Installation** (``POST /_emulator/install``, not part of Bitrix24: the administrator's click):

- ``ui: true``, an application with an installation page
  (https://apidocs.bitrix24.com/settings/app-installation/local-apps/installation-master.html): the
  portal posts the page request the administrator's browser would send, with the form fields of
  https://apidocs.bitrix24.com/settings/oauth/simple-way.html (``AUTH_ID``, ``AUTH_EXPIRES``,
  ``REFRESH_ID``, ``member_id``, ``status``, plus ``SERVER_ENDPOINT``, ``PLACEMENT=DEFAULT`` and
  ``PLACEMENT_OPTIONS``) and ``DOMAIN``, ``PROTOCOL``, ``LANG``, ``APP_SID`` in the query string. The
  installation is finished only when the page calls ``BX24.installFinish()`` (or the JS SDK's
  ``$b24.installFinish()``): its answer must be 2xx and its body must contain that call
  (https://apidocs.bitrix24.com/settings/app-installation/installation-finish.html). Until then the
  application is "not fully installed": ``app.info`` says ``INSTALLED: false`` and no event reaches its
  bindings. When finished, ``ONAPPINSTALL`` with a second token pair goes to ``event_handler``
  (https://apidocs.bitrix24.com/api-reference/common/events/on-app-install.html).
- ``ui: false``, "uses only API"
  (https://apidocs.bitrix24.com/settings/app-installation/local-apps/installation-callback.html): one
  POST of ``ONAPPINSTALL`` with the tokens to ``handler``; installed at once.

Installing again issues new tokens and a new ``application_token``, and every earlier token of the
application stops working. ``POST /_emulator/uninstall`` drops every token and binding of the
application and posts ``ONAPPUNINSTALL`` without tokens
(https://apidocs.bitrix24.com/api-reference/common/events/on-app-uninstall.html). ``/_emulator/oauth``
expires access tokens, revokes refresh tokens, switches payment-required mode and renames the portal
(a REST request on the old address is then redirected, 302, to the new one:
https://apidocs.bitrix24.com/settings/how-to-call-rest-api/change-domen.html).

The portal's address in ``client_endpoint`` and ``auth[domain]`` is its ``domain`` if it has one,
otherwise the Host the install request came in on; the scheme is ``http``, the only one the emulator
serves. The authorization server's address (``server_endpoint``) is the Host a request reached the
emulator on, or the address the server listens on when that Host is the portal's own.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

from werkzeug.wrappers import Request, Response

from . import errors, system
from .errors import ApiError
from .phpjson import dumps

TOKEN_PATHS = ("/oauth/token/", "/oauth/token")
INSTALL_PATH, UNINSTALL_PATH, CONTROL_PATH = "/_emulator/install", "/_emulator/uninstall", "/_emulator/oauth"
ADMIN_PATHS = (INSTALL_PATH, UNINSTALL_PATH, CONTROL_PATH)
REFRESH_TTL = 180 * 86400.0  # "The lifespan of the refresh_token is 180 days" (auto-renewal.html)
INSTALL_TIMEOUT = 10.0  # each synchronous POST of an installation or uninstallation
APP_ID = 1  # the application's local id on the portal (app.info ID; event bindings are keyed by it)
APP_VERSION = 1
APP_STATUS = "L"  # a local application (app-info.html)
LICENSE = "en_pro100"
FINISH_CALLS = (b"BX24.installFinish(", b"$b24.installFinish(")
MAX_ANSWER_BYTES = 1 << 20  # of an install page's answer, searched for installFinish
MAX_URL_LENGTH = 2048
LANGUAGE = re.compile(r"^[a-z]{2}$")
HOST = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?)(:[0-9]{1,5})?$")
PRUNE_AT = 4096  # event tokens (no refresh token) expired for an hour are forgotten past this many


def invalid_token() -> ApiError:
    return ApiError("invalid_token", "Unable to get application by token", 401)


def expired_token() -> ApiError:
    return ApiError("expired_token", "The access token provided has expired.", 401)


def payment_required(status: int) -> ApiError:
    return ApiError("PAYMENT_REQUIRED", "Payment required", status)


def _grant_error(code: str, description: str, status: int = 400) -> ApiError:
    return ApiError(code, description, status)


class AdminError(ApiError):
    """A refusal of one of the emulator's own endpoints (not part of Bitrix24)."""


@dataclass
class _Access:
    expires: float
    refresh: str | None  # the refresh token of its pair; None: issued for an event (no refresh token)


@dataclass
class _Refresh:
    access: str
    expires: float


def host_name(host: str) -> str:
    """``host`` without its port, lower-cased (IPv6 keeps its brackets)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.split(":", 1)[0]


def same_host(request_host: str, address: str) -> bool:
    """Whether a request's Host names ``address``: with its port if ``address`` has one, else any port."""
    request_host, address = request_host.strip().lower(), address.strip().lower()
    if host_name(address) != address:
        return request_host == address
    return host_name(request_host) == address


class OAuth:
    """The application's state on one portal (``portal.oauth``). Called under the portal's lock, except
    for the endpoints, which take it themselves and let it go while they post to the application."""

    def __init__(self, portal, app=None, access_ttl: float = 3600.0):
        if app is not None:
            if isinstance(app, str) or len(app) != 2 or not all(isinstance(v, str) and v for v in app):
                raise ValueError("app must be None or (client_id, client_secret), two non-empty strings")
        access_ttl = float(access_ttl)
        if not 0 < access_ttl < math.inf:
            raise ValueError("access_ttl must be a positive number of seconds")
        self.portal = portal
        self.client_id, self.client_secret = (app[0], app[1]) if app is not None else (None, None)
        self.access_ttl = access_ttl
        self.app_id = APP_ID
        self.status = "absent"  # "pending": installed, installFinish not called yet; "installed"
        self.generation = 0  # one more for every installation and uninstallation
        self.application_token: str | None = None
        self.scopes: tuple[str, ...] = system.ALL_SCOPES
        self.language = "en"
        self.handler: str | None = None
        self.event_handler: str | None = None
        self.install_host: str | None = None  # the Host the install request came in on
        self.server_host: str | None = None  # the authorization server's address, as seen at install
        self.former_hosts: list[str] = []  # the portal's addresses before a rename (answered with 302)
        self.payment_required = False
        self.access: dict[str, _Access] = {}
        self.refresh: dict[str, _Refresh] = {}
        self.on_rename = None  # Portals' hook: called with (portal, new_host) before a rename; may refuse
        self.known_hosts = lambda: ()  # Portals': every portal's domains (none of them is the server's address)

    # ---- state --------------------------------------------------------------------------------------

    @property
    def credentials(self) -> tuple[str, str] | None:
        return None if self.client_id is None else (self.client_id, self.client_secret)

    @property
    def installed(self) -> bool:
        return self.status == "installed"

    @property
    def portal_host(self) -> str | None:
        return self.portal.domain or self.install_host

    def client_endpoint(self) -> str:
        return f"http://{self.portal_host}/rest/"

    def owns(self, binding) -> bool:
        """Whether an event binding is this application's (made with event.bind over OAuth)."""
        return self.client_id is not None and binding.app_id == self.app_id

    def stats(self) -> dict:
        return {"installed": self.installed, "client_id": self.client_id, "domain": self.portal_host}

    def state(self) -> dict:
        """What ``/_emulator/oauth`` answers (no tokens, no secret)."""
        now = self.portal._now()
        return {"client_id": self.client_id, "installed": self.installed, "status": self.status,
                "member_id": self.portal.member_id, "domain": self.portal_host,
                "former_domains": list(self.former_hosts), "scope": ",".join(self.scopes),
                "language": self.language, "payment_required": self.payment_required,
                "access_tokens": sum(1 for a in self.access.values() if a.expires > now),
                "refresh_tokens": sum(1 for r in self.refresh.values() if r.expires > now),
                "access_ttl": self.access_ttl}

    def app_info(self) -> dict:
        """``app.info`` for the application (https://apidocs.bitrix24.com/api-reference/common/system/app-info.html)."""
        return {"ID": self.app_id, "CODE": self.client_id, "VERSION": APP_VERSION, "STATUS": APP_STATUS,
                "INSTALLED": self.installed, "PAYMENT_EXPIRED": "Y" if self.payment_required else "N",
                "DAYS": -1 if self.payment_required else None, "LANGUAGE_ID": self.language,
                "LICENSE": LICENSE, "LICENSE_TYPE": LICENSE.split("_", 1)[1], "LICENSE_FAMILY": "pro"}

    # ---- tokens -------------------------------------------------------------------------------------

    def issue(self, *, refresh: bool = True) -> tuple[str, str | None, float]:
        """A new access token (and refresh token): ``(access, refresh, issued_at)``."""
        now = self.portal._now()
        access = secrets.token_hex(16)
        refresh_token = secrets.token_hex(16) if refresh else None
        self.access[access] = _Access(now + self.access_ttl, refresh_token)
        if refresh_token is not None:
            self.refresh[refresh_token] = _Refresh(access, now + REFRESH_TTL)
        if len(self.access) > PRUNE_AT:
            self.access = {k: v for k, v in self.access.items() if v.refresh is not None or v.expires > now - 3600}
        return access, refresh_token, now

    def _drop_tokens(self) -> None:
        self.access.clear()
        self.refresh.clear()

    def _auth_pairs(self, access: str, refresh: str | None, issued: float, server_host: str) -> list:
        """The ``auth[...]`` fields of an event carrying tokens (api-reference/events/index.html order)."""
        pairs = [("auth[access_token]", access), ("auth[expires]", str(int(issued + self.access_ttl))),
                 ("auth[expires_in]", str(math.ceil(self.access_ttl))), ("auth[scope]", ",".join(self.scopes)),
                 ("auth[domain]", self.portal_host), ("auth[server_endpoint]", f"http://{server_host}/rest/"),
                 ("auth[status]", APP_STATUS), ("auth[client_endpoint]", self.client_endpoint()),
                 ("auth[member_id]", self.portal.member_id), ("auth[user_id]", str(self.portal.user_id))]
        if refresh is not None:
            pairs.append(("auth[refresh_token]", refresh))
        pairs.append(("auth[application_token]", self.application_token))
        return pairs

    def event_auth(self, refresh: bool = False) -> list[tuple[str, str]] | None:
        """The ``auth[...]`` of an event posted to one of the application's bindings, with a fresh access
        token and no refresh token (``refresh=True``: with one, as ONOFFLINEEVENT's: on-offline-event.html);
        None while the installation is not finished (installation-finish.html)."""
        if not self.installed:
            return None
        access, refresh_token, issued = self.issue(refresh=refresh)
        return self._auth_pairs(access, refresh_token, issued, self.server_host)

    def authenticate(self, method: str, params: dict, request: Request) -> dict:
        """Check the access token of a ``/rest/<method>`` call; returns the context of the call."""
        token = _token(params, request)
        if token is None:
            raise errors.no_auth()
        record = self.access.get(token) if isinstance(token, str) and self.client_id is not None else None
        if record is None:
            raise invalid_token()
        if self.portal._now() >= record.expires:
            raise expired_token()
        if self.payment_required and method != "app.info":
            raise payment_required(401)
        # auth_connector is an auth parameter: taken off the method's parameters into the call's context
        # (CRestServer::checkAuth's parameters_clear), where event.bind, event.offline.* and the offline
        # queue's skip rule read it (offline.py). Its licence is checked once the scope is (emulator.py).
        given = params.get("auth_connector") is not None
        connector = params.pop("auth_connector", None)
        if isinstance(connector, (int, float)) and not isinstance(connector, bool):
            connector = str(connector)
        return {"auth_type": "oauth", "app_id": self.app_id, "user_id": self.portal.user_id, "admin": True,
                "auth_connector": connector if isinstance(connector, str) else "",
                "auth_connector_given": given, "scopes": self.scopes}

    # ---- the endpoints ------------------------------------------------------------------------------

    def answer(self, request: Request) -> Response | None:
        """The response to a request this module serves (token endpoint, admin endpoints, the redirect
        from a former address), or None for the portal to handle it."""
        path = request.path
        if path in TOKEN_PATHS:
            return self._token_endpoint(request)
        if path in ADMIN_PATHS:
            try:
                body = self._admin(path, request)
                status = 200
            except ApiError as err:
                body, status = err.body(), err.status
            return Response(dumps(body), status=status, mimetype="application/json")
        if self.former_hosts and path.startswith("/rest/"):
            return self._redirect(request)
        return None

    def _redirect(self, request: Request) -> Response | None:
        host = request.host or ""
        current = self.portal_host
        if not any(same_host(host, h) for h in self.former_hosts) or (current and same_host(host, current)):
            return None
        query = request.environ.get("QUERY_STRING", "")
        location = f"{request.scheme}://{current}{quote(request.path, safe='/:@!$&()*+,;=-._~')}"
        if query:
            location += f"?{query}"
        portal = self.portal
        with portal._lock:
            portal.counters.requests += 1
            portal.counters.by_status[302] += 1
        response = Response(b"", status=302)
        response.headers["Location"] = location
        return response

    def _token_endpoint(self, request: Request) -> Response:
        from .emulator import read_params

        params = read_params(request)
        counted = params.get("grant_type") == "refresh_token"
        portal = self.portal
        with portal._lock:
            try:
                body, status = self._grant(params, request), 200
            except ApiError as err:
                body, status = err.body(), err.status
            if counted:
                portal.counters.oauth_refreshes += 1
                if status != 200:
                    portal.counters.oauth_refresh_errors += 1
        return Response(dumps(body), status=status, mimetype="application/json")

    def _grant(self, params: dict, request: Request) -> dict:
        grant = params.get("grant_type")
        if not isinstance(grant, str) or grant == "":
            raise _grant_error("invalid_request", "Invalid grant_type parameter or parameter missing")
        if grant not in ("refresh_token", "authorization_code"):
            raise _grant_error("unsupported_grant_type", "Grant type is not supported")
        for name in ("client_id", "client_secret"):
            if not isinstance(params.get(name), str) or params[name] == "":
                raise _grant_error("invalid_request", f"Parameter {name} is missing")
        if self.client_id is None or not (secrets.compare_digest(params["client_id"], self.client_id) and
                                          secrets.compare_digest(params["client_secret"], self.client_secret)):
            raise _grant_error("invalid_client", "The client credentials are invalid", 401)
        given = "code" if grant == "authorization_code" else "refresh_token"
        value = params.get(given)
        if not isinstance(value, str) or value == "":
            raise _grant_error("invalid_request", f"Parameter {given} is missing")
        if grant == "authorization_code":
            raise _grant_error("invalid_grant", "Invalid authorization code")  # no codes are issued here
        record = self.refresh.get(value)
        if record is None:
            raise _grant_error("invalid_grant", "Invalid refresh token")
        if self.portal._now() >= record.expires:
            del self.refresh[value]
            self.access.pop(record.access, None)
            raise _grant_error("invalid_grant", "Refresh token has expired")
        if self.payment_required:
            raise payment_required(400)  # the token is kept: it works again once paid
        del self.refresh[value]
        self.access.pop(record.access, None)
        access, refresh, issued = self.issue()
        server = self._server_host(request)
        return {"access_token": access, "expires": int(issued + self.access_ttl),
                "expires_in": math.ceil(self.access_ttl), "scope": ",".join(self.scopes), "domain": server,
                "server_endpoint": f"http://{server}/rest/", "status": APP_STATUS,
                "client_endpoint": self.client_endpoint(), "member_id": self.portal.member_id,
                "user_id": self.portal.user_id, "refresh_token": refresh}

    def _server_host(self, request: Request) -> str:
        """The authorization server's address: the Host the request came in on, unless that names the
        portal, then the address the server listens on."""
        host = (request.host or "").lower()
        portal_hosts = [h for h in (self.portal.domain, *self.former_hosts, *self.known_hosts()) if h]
        if host and HOST.match(host) and not any(same_host(host, h) for h in portal_hosts):
            return host
        environ = request.environ
        name = str(environ.get("SERVER_NAME") or "127.0.0.1")
        if name in ("0.0.0.0", "::", ""):
            name = "127.0.0.1"
        if ":" in name:
            name = f"[{name}]"
        port = str(environ.get("SERVER_PORT") or "80")
        return name if port == "80" else f"{name}:{port}"

    # ---- the emulator's own endpoints: install, uninstall, controls ----------------------------------

    def _admin(self, path: str, request: Request) -> dict:
        if path == CONTROL_PATH and request.method in ("GET", "HEAD"):
            with self.portal._lock:
                return self.state()
        if request.method != "POST":
            raise AdminError("METHOD_NOT_ALLOWED", f"{path} takes POST with a JSON object", 405)
        payload = _json_object(request)
        if path == CONTROL_PATH:
            return self._control(payload, request)  # a rename needs no application
        if self.client_id is None:
            raise AdminError("NO_APP", "The emulator was started without an application (app=, --app)", 409)
        if path == INSTALL_PATH:
            return self._install(payload, request)
        return self._uninstall(payload)

    def _install(self, payload: dict, request: Request) -> dict:
        _only(payload, ("handler", "event_handler", "ui", "scope", "language"))
        handler = _url(payload.get("handler"), "handler")
        event_handler = _url(payload["event_handler"], "event_handler") if payload.get(
            "event_handler") is not None else handler
        ui = _bool(payload.get("ui", True), "ui")
        scopes = _scopes(payload.get("scope"))
        language = payload.get("language", "en")
        if not isinstance(language, str) or not LANGUAGE.match(language.lower()):
            raise AdminError("INVALID_LANGUAGE", "language must be a two-letter code such as en or de", 400)
        portal = self.portal
        with portal._lock:
            self.generation += 1
            generation = self.generation
            self._drop_tokens()  # a reinstallation: every earlier token of the application stops working
            self.application_token = secrets.token_hex(16)
            self.status = "pending" if ui else "installed"
            self.handler, self.event_handler = handler, event_handler
            self.scopes, self.language = scopes, language.lower()
            self.server_host = self._server_host(request)
            host = (request.host or "").lower()
            self.install_host = host if HOST.match(host) else self.server_host
            access, refresh, issued = self.issue()
            event = self._install_event(access, refresh, issued)
            page_form = [("AUTH_ID", access), ("AUTH_EXPIRES", str(math.ceil(self.access_ttl))),
                         ("REFRESH_ID", refresh), ("SERVER_ENDPOINT", f"http://{self.server_host}/rest/"),
                         ("member_id", portal.member_id), ("status", APP_STATUS), ("PLACEMENT", "DEFAULT"),
                         ("PLACEMENT_OPTIONS", "{}")]
            page_query = [("DOMAIN", self.portal_host), ("PROTOCOL", "0"), ("LANG", self.language),
                          ("APP_SID", secrets.token_hex(16))]
        answer = {"member_id": portal.member_id, "domain": self.portal_host, "installed": not ui,
                  "install_status": None, "event_status": None}
        if not ui:
            answer["event_status"] = self._post("ONAPPINSTALL", handler, event)[0]
            return answer
        status, body = self._post("APP_INSTALL_PAGE", _with_query(handler, page_query), page_form,
                                  browser=True)
        answer["install_status"] = status
        if status is None or not 200 <= status < 300 or not any(call in body for call in FINISH_CALLS):
            return answer  # "not fully installed" until the page calls installFinish
        with portal._lock:
            if self.generation != generation or self.status != "pending":
                return answer  # installed again or removed meanwhile
            self.status = "installed"
            access, refresh, issued = self.issue()  # the event's own pair
            event = self._install_event(access, refresh, issued)
        answer["installed"] = True
        answer["event_status"] = self._post("ONAPPINSTALL", event_handler, event)[0]
        return answer

    def _install_event(self, access: str, refresh: str, issued: float) -> list[tuple[str, str]]:
        """ONAPPINSTALL as posted to the installation handler (on-app-install.html, simple-way.html)."""
        return [("event", "ONAPPINSTALL"), ("data[VERSION]", str(APP_VERSION)), ("data[ACTIVE]", "Y"),
                ("data[INSTALLED]", "Y"), ("data[LANGUAGE_ID]", self.language), ("ts", str(int(issued))),
                *self._auth_pairs(access, refresh, issued, self.server_host)]

    def _uninstall(self, payload: dict) -> dict:
        _only(payload, ("clean",))
        clean = _bool(payload.get("clean", False), "clean")
        portal = self.portal
        with portal._lock:
            if self.status == "absent":
                raise AdminError("NOT_INSTALLED", "The application is not installed on this portal", 409)
            finished = self.installed
            pairs = [("event", "ONAPPUNINSTALL"), ("data[LANGUAGE_ID]", self.language),
                     ("data[CLEAN]", "1" if clean else "0"), ("ts", str(int(portal._now()))),
                     ("auth[domain]", self.portal_host), ("auth[client_endpoint]", self.client_endpoint()),
                     ("auth[server_endpoint]", f"http://{self.server_host}/rest/"),
                     ("auth[member_id]", portal.member_id), ("auth[application_token]", self.application_token)]
            # The application's own ONAPPUNINSTALL bindings (event.bind) get it too, once per address.
            bound = [(b.id, b.handler) for b in portal.handlers.bindings(self.app_id, any_app=False)
                     if b.event == "ONAPPUNINSTALL" and not b.offline and b.handler != self.event_handler]
            self._drop_tokens()
            portal.handlers.unbind(app_id=self.app_id)
            portal.offline.forget_app(self.app_id)  # its offline queues go with its bindings
            self.generation += 1
            self.status = "absent"
            self.application_token = None
            target = self.event_handler
        if not finished:
            return {"event_status": None}  # events never reached an application not fully installed
        status = self._post("ONAPPUNINSTALL", target, pairs)[0]
        seen = {target}
        for handler_id, url in bound:
            if url not in seen:
                seen.add(url)
                self._post("ONAPPUNINSTALL", url, [*pairs[:1], ("event_handler_id", str(handler_id)), *pairs[1:]])
        return {"event_status": status}

    def _control(self, payload: dict, request: Request) -> dict:
        _only(payload, ("expire", "revoke", "payment_required", "domain"))
        expire = _bool(payload.get("expire", False), "expire")
        revoke = _bool(payload.get("revoke", False), "revoke")
        payment = _bool(payload["payment_required"], "payment_required") if "payment_required" in payload else None
        domain = payload.get("domain")
        if domain is not None:
            if not isinstance(domain, str) or len(domain) > 260 or not HOST.match(domain.strip().lower()):
                raise AdminError("INVALID_DOMAIN", "domain must be a host name with an optional port, "
                                                   "e.g. localhost:5002", 400)
            domain = domain.strip().lower()
            port = domain.rsplit(":", 1)[1] if host_name(domain) != domain else "1"
            if not 1 <= int(port) <= 65535:
                raise AdminError("INVALID_DOMAIN", "the port must be 1..65535", 400)
        portal = self.portal
        with portal._lock:
            if domain is not None:
                self._rename(domain, request)
            now = portal._now()
            if expire:
                for record in self.access.values():
                    record.expires = min(record.expires, now)
            if revoke:
                self.refresh.clear()
            if payment is not None:
                self.payment_required = payment
            return self.state()

    def _rename(self, new: str, request: Request) -> None:
        old = self.portal_host or (request.host or "").lower()
        if old == new:
            return
        if self.on_rename is not None:
            try:
                self.on_rename(self.portal, new)
            except ValueError as err:
                raise AdminError("DOMAIN_TAKEN", str(err), 409) from None
        if old and old not in self.former_hosts:
            self.former_hosts.append(old)
        if new in self.former_hosts:
            self.former_hosts.remove(new)
        self.portal.domain = new

    def _post(self, name: str, url: str, pairs: list, *, browser: bool = False) -> tuple[int | None, bytes]:
        """POST ``pairs`` as a form to ``url`` now (not queued) and log it in ``events_sent``."""
        request = urllib.request.Request(
            url, data=urlencode(pairs).encode("utf-8"), method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     "User-Agent": "Mozilla/5.0 (Bitrix24 emulator)" if browser else "Bitrix24 Webhook Engine"})
        status, body, error = None, b"", None
        try:
            with _OPENER.open(request, timeout=INSTALL_TIMEOUT) as response:
                status, body = response.status, response.read(MAX_ANSWER_BYTES)
        except urllib.error.HTTPError as err:
            status, error = err.code, f"HTTP {err.code}"
        except Exception as err:  # refused, timed out, a URL urllib will not take: logged, never retried
            error = f"{type(err).__name__}: {err}"
        entry = {"event": name, "url": url, "payload": dict(pairs), "status": status,
                 "ok": status is not None and 200 <= status < 300, "error": error}
        with self.portal._lock:
            self.portal.events_sent.append(entry)
        return status, body


# The portal posts straight to the application: no proxy from the environment in between.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _token(params: dict, request: Request):
    """The access token of a call: ``auth``, ``access_token`` or an ``Authorization: Bearer`` header
    (the portal's source, modules/rest/lib/oauth/auth.php); None when there is none."""
    for name in ("auth", "access_token"):
        value = params.get(name)
        if value not in (None, "", [], {}):
            return value
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer " and header[7:].strip():
        return header[7:].strip()
    return None


def _json_object(request: Request) -> dict:
    data = request.get_data()
    if not data.strip():
        return {}
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        raise AdminError("INVALID_JSON", "The body must be a JSON object", 400) from None
    if not isinstance(payload, dict):
        raise AdminError("INVALID_JSON", "The body must be a JSON object", 400)
    return payload


def _only(payload: dict, names: tuple[str, ...]) -> None:
    unknown = sorted(str(k) for k in payload if k not in names)
    if unknown:
        raise AdminError("UNKNOWN_FIELD", f"Unknown field(s) {', '.join(unknown)[:200]}; known: "
                                          f"{', '.join(names)}", 400)


def _bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise AdminError("INVALID_FIELD", f"{name} must be true or false", 400)
    return value


def _url(value, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_URL_LENGTH or any(
            c.isspace() or ord(c) < 32 for c in value):
        raise AdminError("INVALID_URL", f"{name} must be an http(s) URL of at most {MAX_URL_LENGTH} characters", 400)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise AdminError("INVALID_URL", f"{name} is not a valid URL", 400) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AdminError("INVALID_URL", f"{name} must be an http(s) URL", 400)
    return value


def _scopes(value) -> tuple[str, ...]:
    if value is None:
        return system.ALL_SCOPES
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ",".join(value)
    if not isinstance(value, str) or len(value) > 1000:
        raise AdminError("INVALID_SCOPE", "scope must be a comma-separated string such as crm,task,user", 400)
    try:
        return system.parse_scopes(value)
    except ValueError as err:
        raise AdminError("INVALID_SCOPE", str(err), 400) from None


def _with_query(url: str, pairs: list) -> str:
    base = url.partition("#")[0]  # a fragment is never sent
    return base + ("&" if "?" in base else "?") + urlencode(pairs)
