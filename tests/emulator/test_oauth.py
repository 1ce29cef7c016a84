"""The OAuth side of a Bitrix24 application (bitrix24_emulator/oauth.py): installation, token renewal,
REST calls with a token, the application's events, uninstallation, the controls and the stats.

Sources: https://apidocs.bitrix24.com/settings/oauth/auto-renewal.html (the renewal request and answer,
180-day refresh tokens, PAYMENT_REQUIRED), https://apidocs.bitrix24.com/settings/oauth/error-codes.html
(invalid_request, invalid_client, invalid_grant), https://apidocs.bitrix24.com/settings/oauth/index.html
(authorization_code), https://apidocs.bitrix24.com/error-codes.html (NO_AUTH_FOUND, expired_token,
insufficient_scope "provided by the access token"),
https://apidocs.bitrix24.com/settings/oauth/simple-way.html (the install page's POST fields),
https://apidocs.bitrix24.com/settings/app-installation/installation-finish.html (installFinish; no events
before it), https://apidocs.bitrix24.com/settings/app-installation/local-apps/installation-master.html,
https://apidocs.bitrix24.com/settings/app-installation/local-apps/installation-callback.html,
https://apidocs.bitrix24.com/api-reference/common/events/on-app-install.html,
https://apidocs.bitrix24.com/api-reference/common/events/on-app-uninstall.html,
https://apidocs.bitrix24.com/api-reference/common/system/app-info.html,
https://apidocs.bitrix24.com/api-reference/events/index.html (the auth of an application's events),
https://apidocs.bitrix24.com/settings/how-to-call-rest-api/change-domen.html (a renamed portal redirects).
"""

from __future__ import annotations

import json
import threading

import pytest
import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from bitrix24_emulator import create_emulator, create_portals, start_server
from bitrix24_emulator.__main__ import build_parser, emulator_options

from .conftest import BASE, FakeClock

APP = ("local.6571f0e2a1b2c3.12345678", "Xk9sT2vQ0pLmN4bR7cZ1yW3eU5iO8aS6dF0gH2jK4lP6zX8cV0")
HOST = "127.0.0.1:5002"
FINISH_PAGE = "<script src='//api.bitrix24.com/api/v1/'></script><script>BX24.init(function(){BX24.installFinish();});</script>"
DAY = 86400.0


class _Quiet(WSGIRequestHandler):
    def log_request(self, code="-", size="-"):
        pass


class AppServer:
    """The application's side, a tiny Werkzeug server in a thread: records every request and answers the
    install page (``/install``) with ``page`` and ``page_status``; ``on_page(form)`` runs before it answers."""

    def __init__(self, page: str = FINISH_PAGE, page_status: int = 200, on_page=None):
        self.page, self.page_status, self.on_page = page, page_status, on_page
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self.wsgi, threaded=True, request_handler=_Quiet)
        self.url = f"http://127.0.0.1:{self.server.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def wsgi(self, environ, start_response):
        request = Request(environ)
        entry = {"method": request.method, "path": request.path, "query": dict(request.args),
                 "form": dict(request.form), "content_type": request.mimetype,
                 "user_agent": request.headers.get("User-Agent", "")}
        with self._lock:
            self.requests.append(entry)
        if request.path == "/install":
            if self.on_page:
                self.on_page(entry["form"])
            return Response(self.page, status=self.page_status, mimetype="text/html")(environ, start_response)
        return Response("ok")(environ, start_response)

    def posts(self, path: str) -> list[dict]:
        with self._lock:
            return [r["form"] for r in self.requests if r["path"] == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def app_server():
    server = AppServer()
    yield server
    server.close()


class Portal:
    """An emulator with the application, called in-process (werkzeug's test client) on Host ``HOST``."""

    def __init__(self, emu=None, **options):
        self.clock = options.setdefault("clock", FakeClock())
        self.emu = emu if emu is not None else create_emulator(app=APP, **options)
        self.client = Client(self.emu)

    def post_json(self, path, payload, host=HOST, **kwargs):
        response = self.client.post(path, json=payload, headers={"Host": host}, **kwargs)
        return response.status_code, json.loads(response.get_data(as_text=True) or "null")

    def install(self, handler, **payload):
        status, body = self.post_json("/_emulator/install", {"handler": handler, **payload})
        assert status == 200, body
        return body

    def uninstall(self, **payload):
        return self.post_json("/_emulator/uninstall", payload)

    def control(self, **payload):
        return self.post_json("/_emulator/oauth", payload)

    def refresh(self, token, host=HOST, **overrides):
        params = {"grant_type": "refresh_token", "client_id": APP[0], "client_secret": APP[1],
                  "refresh_token": token, **overrides}
        params = {k: v for k, v in params.items() if v is not None}
        response = self.client.get("/oauth/token/", query_string=params, headers={"Host": host})
        return response.status_code, response.json

    def rest(self, method, token, payload=None, host=HOST, **kwargs):
        body = {**(payload or {}), "auth": token} if token is not None else payload
        response = self.client.post(f"/rest/{method}", json=body, headers={"Host": host}, **kwargs)
        return response.status_code, json.loads(response.get_data(as_text=True) or "null")

    def ok(self, method, token, payload=None, **kwargs):
        status, body = self.rest(method, token, payload, **kwargs)
        assert status == 200, body
        return body["result"]

    def stats(self):
        return self.client.get("/_emulator/stats").json


def installed(app_server, **options) -> tuple[Portal, dict]:
    """A portal with the application installed without a UI; returns it and the ONAPPINSTALL form."""
    portal = Portal(**options)
    portal.install(app_server.url + "/callback", ui=False)
    return portal, app_server.posts("/callback")[-1]


# ---- installation -------------------------------------------------------------------------------------


def test_an_api_only_app_is_installed_at_once_with_onappinstall_carrying_its_tokens(app_server):
    portal = Portal()
    answer = portal.install(app_server.url + "/callback", ui=False, scope="crm,user", language="de")
    assert answer == {"member_id": portal.emu.member_id, "domain": HOST, "installed": True,
                      "install_status": None, "event_status": 200}
    [event] = app_server.posts("/callback")
    assert list(event) == ["event", "data[VERSION]", "data[ACTIVE]", "data[INSTALLED]", "data[LANGUAGE_ID]", "ts",
                           "auth[access_token]", "auth[expires]", "auth[expires_in]", "auth[scope]", "auth[domain]",
                           "auth[server_endpoint]", "auth[status]", "auth[client_endpoint]", "auth[member_id]",
                           "auth[user_id]", "auth[refresh_token]", "auth[application_token]"]
    now = int(portal.clock.now)
    assert event["event"] == "ONAPPINSTALL" and event["ts"] == str(now)
    assert (event["data[VERSION]"], event["data[ACTIVE]"], event["data[INSTALLED]"], event["data[LANGUAGE_ID]"]) == (
        "1", "Y", "Y", "de")
    assert event["auth[expires]"] == str(now + 3600) and event["auth[expires_in]"] == "3600"
    assert event["auth[scope]"] == "crm,user" and event["auth[status]"] == "L" and event["auth[user_id]"] == "1"
    assert event["auth[domain]"] == HOST and event["auth[client_endpoint]"] == f"http://{HOST}/rest/"
    assert event["auth[server_endpoint]"] == f"http://{HOST}/rest/"
    assert event["auth[member_id]"] == portal.emu.member_id and len(event["auth[application_token]"]) == 32
    assert app_server.requests[0]["content_type"] == "application/x-www-form-urlencoded"
    info = portal.ok("app.info", event["auth[access_token]"])
    assert info == {"ID": 1, "CODE": APP[0], "VERSION": 1, "STATUS": "L", "INSTALLED": True, "PAYMENT_EXPIRED": "N",
                    "DAYS": None, "LANGUAGE_ID": "de", "LICENSE": "en_pro100", "LICENSE_TYPE": "pro100",
                    "LICENSE_FAMILY": "pro"}
    assert [(e["event"], e["url"], e["status"], e["ok"]) for e in portal.emu.events_sent] == [
        ("ONAPPINSTALL", app_server.url + "/callback", 200, True)]


def test_an_app_with_a_page_is_installed_when_the_page_calls_install_finish(app_server):
    portal = Portal()
    answer = portal.install(app_server.url + "/install?x=1", event_handler=app_server.url + "/events")
    assert answer == {"member_id": portal.emu.member_id, "domain": HOST, "installed": True, "install_status": 200,
                      "event_status": 200}
    [page] = [r for r in app_server.requests if r["path"] == "/install"]
    assert page["method"] == "POST" and page["user_agent"].startswith("Mozilla/5.0")
    assert list(page["query"]) == ["x", "DOMAIN", "PROTOCOL", "LANG", "APP_SID"]
    assert page["query"]["DOMAIN"] == HOST and page["query"]["PROTOCOL"] == "0" and page["query"]["LANG"] == "en"
    form = page["form"]
    assert list(form) == ["AUTH_ID", "AUTH_EXPIRES", "REFRESH_ID", "SERVER_ENDPOINT", "member_id", "status",
                          "PLACEMENT", "PLACEMENT_OPTIONS"]
    assert (form["AUTH_EXPIRES"], form["status"], form["PLACEMENT"], form["PLACEMENT_OPTIONS"]) == (
        "3600", "L", "DEFAULT", "{}")
    assert form["member_id"] == portal.emu.member_id and form["SERVER_ENDPOINT"] == f"http://{HOST}/rest/"
    [event] = app_server.posts("/events")
    assert event["event"] == "ONAPPINSTALL"
    # Two pairs, both good: the page's and the event's.
    assert {form["AUTH_ID"], form["REFRESH_ID"]}.isdisjoint({event["auth[access_token]"], event["auth[refresh_token]"]})
    assert portal.ok("app.info", form["AUTH_ID"])["INSTALLED"] is True
    assert portal.ok("app.info", event["auth[access_token]"])["INSTALLED"] is True
    assert [e["event"] for e in portal.emu.events_sent] == ["APP_INSTALL_PAGE", "ONAPPINSTALL"]


@pytest.mark.parametrize(("page", "status"), [
    ("<html>Settings saved</html>", 200),  # never calls installFinish
    (FINISH_PAGE, 500),  # calls it, but the page failed
])
def test_a_page_that_does_not_finish_leaves_the_app_not_fully_installed(page, status):
    server = AppServer(page=page, page_status=status)
    try:
        portal = Portal()
        answer = portal.install(server.url + "/install", event_handler=server.url + "/events")
        assert answer["installed"] is False and answer["install_status"] == status and answer["event_status"] is None
        assert server.posts("/events") == []  # no ONAPPINSTALL
        token = server.posts("/install")[0]["AUTH_ID"]
        # The page's token works (the page binds its events before it finishes) but the app is not installed...
        assert portal.ok("app.info", token)["INSTALLED"] is False
        assert portal.ok("event.bind", token, {"event": "ONCRMDEALADD", "handler": server.url + "/deal"}) is True
        # ...so no event reaches it (installation-finish.html).
        portal.ok("crm.deal.add", token, {"fields": {"TITLE": "D"}})
        assert portal.emu.wait_events(5)
        assert server.posts("/deal") == [] and portal.stats()["app"]["installed"] is False
    finally:
        server.close()


def test_the_install_page_may_call_the_portal_before_it_answers():
    """The page binds its events with AUTH_ID while the portal waits for it (installation-master.html)."""
    running = start_server(create_emulator(app=APP, limits=False))
    calls = []

    def bind(form):
        calls.append(requests.post(f"{running.url}/rest/event.bind.json", timeout=5, data={
            "auth": form["AUTH_ID"], "event": "ONCRMCONTACTADD", "handler": server.url + "/contact"}).json())

    server = AppServer(on_page=bind)
    try:
        answer = requests.post(f"{running.url}/_emulator/install", json={"handler": server.url + "/install"},
                               timeout=30).json()
        assert answer["installed"] is True and answer["domain"] == f"127.0.0.1:{running.port}"
        assert calls[0]["result"] is True
        token = server.posts("/install")[0]["AUTH_ID"]
        assert requests.post(f"{running.url}/rest/event.get", data={"auth": token}, timeout=5).json()["result"] == [
            {"event": "ONCRMCONTACTADD", "handler": server.url + "/contact", "auth_type": "0", "offline": 0}]
    finally:
        running.stop()
        server.close()


def test_reinstalling_issues_new_tokens_and_application_token_and_the_old_ones_stop_working(app_server):
    portal, first = installed(app_server)
    portal.install(app_server.url + "/callback", ui=False)
    second = app_server.posts("/callback")[-1]
    assert second["auth[application_token]"] != first["auth[application_token]"]
    assert portal.rest("profile", first["auth[access_token]"])[1]["error"] == "invalid_token"
    assert portal.refresh(first["auth[refresh_token]"])[1]["error"] == "invalid_grant"
    assert portal.ok("profile", second["auth[access_token]"])["ID"] == "1"
    assert portal.refresh(second["auth[refresh_token]"])[0] == 200


# ---- the authorization server --------------------------------------------------------------------------


def test_a_refresh_gives_a_new_pair_and_retires_the_one_it_came_from(app_server):
    portal = Portal()
    portal.install(app_server.url + "/install", event_handler=app_server.url + "/events")
    page = app_server.posts("/install")[0]
    event = app_server.posts("/events")[0]
    status, body = portal.refresh(page["REFRESH_ID"], host="localhost:5002")
    assert status == 200
    now = int(portal.clock.now)
    assert list(body) == ["access_token", "expires", "expires_in", "scope", "domain", "server_endpoint", "status",
                          "client_endpoint", "member_id", "user_id", "refresh_token"]
    assert body["expires"] == now + 3600 and body["expires_in"] == 3600 and body["status"] == "L"
    # domain names the authorization server (oauth.bitrix.info on the cloud), client_endpoint the portal.
    assert body["domain"] == "localhost:5002" and body["server_endpoint"] == "http://localhost:5002/rest/"
    assert body["client_endpoint"] == f"http://{HOST}/rest/" and body["member_id"] == portal.emu.member_id
    assert body["user_id"] == 1 and body["scope"] == "crm,task,user,user_basic,user_brief,department,entity,catalog"
    assert {body["access_token"], body["refresh_token"]}.isdisjoint({page["AUTH_ID"], page["REFRESH_ID"]})
    # The refresh token used is gone at once, and so is the access token of its pair...
    assert portal.refresh(page["REFRESH_ID"]) == (400, {"error": "invalid_grant",
                                                        "error_description": "Invalid refresh token"})
    assert portal.rest("profile", page["AUTH_ID"]) == (401, {"error": "invalid_token",
                                                             "error_description": "Unable to get application by token"})
    # ...while the new pair and the event's pair are untouched.
    assert portal.ok("profile", body["access_token"])["ID"] == "1"
    assert portal.ok("profile", event["auth[access_token]"])["ID"] == "1"
    again = portal.refresh(body["refresh_token"])[1]
    assert portal.refresh(event["auth[refresh_token]"])[0] == 200
    assert portal.ok("profile", again["access_token"])["ID"] == "1"


def test_the_token_endpoint_takes_a_post_form_too(app_server):
    portal, event = installed(app_server)
    response = portal.client.post("/oauth/token", data={
        "grant_type": "refresh_token", "client_id": APP[0], "client_secret": APP[1],
        "refresh_token": event["auth[refresh_token]"]})
    assert response.status_code == 200 and response.json["refresh_token"]
    assert response.mimetype == "application/json"


@pytest.mark.parametrize(("overrides", "status", "error"), [
    ({"client_id": "local.other"}, 401, "invalid_client"),
    ({"client_secret": "wrong"}, 401, "invalid_client"),
    ({"grant_type": None}, 400, "invalid_request"),
    ({"client_id": None}, 400, "invalid_request"),
    ({"client_secret": None}, 400, "invalid_request"),
    ({"refresh_token": None}, 400, "invalid_request"),
    ({"refresh_token": "nfhxkzk3gvrg375wl7u7xex9awz6o3k8"}, 400, "invalid_grant"),
    ({"grant_type": "password"}, 400, "unsupported_grant_type"),
    ({"grant_type": "authorization_code", "code": "avmocpghblyi01m3h42bljvqtyd19sw1"}, 400, "invalid_grant"),
    ({"grant_type": "authorization_code"}, 400, "invalid_request"),  # no code
])
def test_token_endpoint_errors(app_server, overrides, status, error):
    portal, event = installed(app_server)
    got_status, body = portal.refresh(event["auth[refresh_token]"], **overrides)
    assert (got_status, body["error"]) == (status, error) and set(body) == {"error", "error_description"}
    assert portal.refresh(event["auth[refresh_token]"])[0] == 200  # the refused request used nothing up


def test_refresh_tokens_live_180_days(app_server):
    portal, event = installed(app_server)
    portal.clock.advance(179 * DAY)
    status, body = portal.refresh(event["auth[refresh_token]"])
    assert status == 200
    portal.clock.advance(180 * DAY)
    assert portal.refresh(body["refresh_token"]) == (400, {"error": "invalid_grant",
                                                          "error_description": "Refresh token has expired"})


def test_revoked_refresh_tokens_and_an_uninstalled_app_are_invalid_grant(app_server):
    portal, event = installed(app_server)
    status, state = portal.control(revoke=True)
    assert status == 200 and state["refresh_tokens"] == 0 and state["access_tokens"] == 1
    assert portal.refresh(event["auth[refresh_token]"])[1]["error"] == "invalid_grant"
    assert portal.ok("profile", event["auth[access_token]"])["ID"] == "1"  # access tokens live on till they expire
    portal.install(app_server.url + "/callback", ui=False)
    event = app_server.posts("/callback")[-1]
    assert portal.uninstall() == (200, {"event_status": 200})
    assert portal.refresh(event["auth[refresh_token]"])[1]["error"] == "invalid_grant"
    assert portal.rest("profile", event["auth[access_token]"])[1]["error"] == "invalid_token"


def test_payment_required_refuses_renewal_and_calls_until_paid(app_server):
    portal, event = installed(app_server)
    status, state = portal.control(payment_required=True)
    assert status == 200 and state["payment_required"] is True
    assert portal.refresh(event["auth[refresh_token]"]) == (400, {"error": "PAYMENT_REQUIRED",
                                                                 "error_description": "Payment required"})
    assert portal.rest("crm.deal.list", event["auth[access_token]"]) == (
        401, {"error": "PAYMENT_REQUIRED", "error_description": "Payment required"})
    # app.info still answers: it is where an application reads its payment status.
    info = portal.ok("app.info", event["auth[access_token]"])
    assert info["PAYMENT_EXPIRED"] == "Y" and info["DAYS"] < 0
    portal.control(payment_required=False)
    assert portal.refresh(event["auth[refresh_token]"])[0] == 200  # the refused refresh used nothing up
    stats = portal.stats()
    assert (stats["oauth_refreshes"], stats["oauth_refresh_errors"]) == (2, 1)


# ---- REST with a token -------------------------------------------------------------------------------


def test_the_order_of_checks_for_a_token(app_server):
    portal, event = installed(app_server, scopes=None)
    token = event["auth[access_token]"]
    assert portal.rest("crm.nothing.here", "bad")[0] == 404  # an unknown method first
    assert portal.rest("profile", None) == (401, {"error": "NO_AUTH_FOUND",
                                                  "error_description": "Wrong authorization data"})
    assert portal.rest("profile", "bad")[1]["error"] == "invalid_token"
    assert portal.rest("profile", ["x"])[1]["error"] == "invalid_token"
    portal.control(expire=True)
    assert portal.rest("profile", token) == (401, {"error": "expired_token",
                                                   "error_description": "The access token provided has expired."})


def test_an_access_token_expires_after_access_ttl(app_server):
    portal, event = installed(app_server, access_ttl=1)
    assert event["auth[expires_in]"] == "1"
    assert portal.ok("profile", event["auth[access_token]"])["ID"] == "1"
    portal.clock.advance(1)
    assert portal.rest("profile", event["auth[access_token]"])[1]["error"] == "expired_token"
    status, body = portal.refresh(event["auth[refresh_token]"])
    assert status == 200 and body["expires_in"] == 1
    assert portal.ok("profile", body["access_token"])["ID"] == "1"


def test_the_token_travels_in_the_query_a_form_json_or_a_bearer_header(app_server):
    portal, event = installed(app_server)
    token = event["auth[access_token]"]
    client = portal.client
    assert client.get(f"/rest/profile.json?auth={token}").status_code == 200
    assert client.post("/rest/profile", data={"auth": token}).status_code == 200
    assert client.post("/rest/profile.json", json={"auth": token}).status_code == 200
    assert client.get("/rest/profile", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get(f"/rest/profile?access_token={token}").status_code == 200


def test_the_apps_scope_is_checked_with_the_access_token_wording(app_server):
    portal = Portal()
    portal.install(app_server.url + "/callback", ui=False, scope="user")
    token = app_server.posts("/callback")[0]["auth[access_token]"]
    assert portal.rest("crm.deal.list", token) == (401, {
        "error": "insufficient_scope",
        "error_description": "The request requires higher privileges than provided by the access token"})
    assert portal.ok("scope", token) == ["user"]
    result = portal.ok("batch", token, {"cmd": {"a": "crm.deal.list", "b": "user.current"}})
    assert result["result_error"]["a"]["error"] == "insufficient_scope" and result["result"]["b"]["ID"] == "1"
    # An application may only bind the events of its scope (and basic ones).
    assert portal.rest("event.bind", token, {"event": "ONCRMDEALADD", "handler": "https://a.test/"})[1][
        "error"] == "ERROR_EVENT_NOT_FOUND"
    assert portal.ok("event.bind", token, {"event": "ONAPPUNINSTALL", "handler": "https://a.test/"}) is True


def test_token_calls_share_the_bucket_of_their_address_with_webhook_calls(app_server):
    portal, event = installed(app_server, burst=2, rate=0.001)
    assert portal.client.get(BASE + "profile").status_code == 200  # a webhook call
    assert portal.rest("profile", event["auth[access_token]"])[0] == 200
    assert portal.rest("profile", event["auth[access_token]"])[1]["error"] == "QUERY_LIMIT_EXCEEDED"


def test_a_webhook_keeps_its_own_app_info_and_refusals(app_server):
    portal, _ = installed(app_server)
    assert portal.client.get(BASE + "app.info").json["result"] == {
        "SCOPE": ["crm", "task", "user", "user_basic", "user_brief", "department", "entity", "catalog"],
        "LICENSE": "en_pro100"}
    assert portal.client.post(BASE + "event.get").json["error"] == "WRONG_AUTH_TYPE"


# ---- the application's events ------------------------------------------------------------------------


def test_an_event_bound_over_oauth_reaches_the_app_with_its_application_token(app_server):
    portal, install = installed(app_server, event_url=app_server.url + "/outbound")
    token = install["auth[access_token]"]
    assert portal.ok("event.bind", token, {"event": "ONCRMDEALADD", "handler": app_server.url + "/deal"}) is True
    assert portal.ok("event.get", token) == [
        {"event": "ONCRMDEALADD", "handler": app_server.url + "/deal", "auth_type": "0", "offline": 0}]
    portal.client.post(BASE + "crm.deal.add", json={"fields": {"TITLE": "By a person"}})
    assert portal.emu.wait_events(5)
    [event] = app_server.posts("/deal")
    assert list(event) == ["event", "event_handler_id", "data[FIELDS][ID]", "ts", "auth[access_token]",
                           "auth[expires]", "auth[expires_in]", "auth[scope]", "auth[domain]", "auth[server_endpoint]",
                           "auth[status]", "auth[client_endpoint]", "auth[member_id]", "auth[user_id]",
                           "auth[application_token]"]  # no refresh token
    assert event["auth[application_token]"] == install["auth[application_token]"]
    assert event["auth[application_token]"] != portal.emu.application_token
    assert (event["auth[domain]"], event["auth[client_endpoint]"]) == (HOST, f"http://{HOST}/rest/")
    assert event["auth[member_id]"] == portal.emu.member_id and event["data[FIELDS][ID]"] == "1"
    assert event["auth[access_token]"] not in (token, install["auth[refresh_token]"])
    assert portal.ok("crm.deal.get", event["auth[access_token]"], {"id": 1})["TITLE"] == "By a person"
    # The portal's outbound webhook still gets its own events, with the portal's token.
    [outbound] = app_server.posts("/outbound")
    assert outbound["auth[application_token]"] == portal.emu.application_token and "auth[access_token]" not in outbound
    # An unbound event stops.
    assert portal.ok("event.unbind", token, {"event": "ONCRMDEALADD", "handler": app_server.url + "/deal"}) == {
        "count": 1}


def test_uninstalling_posts_onappuninstall_without_tokens_and_forgets_the_app(app_server):
    portal, install = installed(app_server)
    token = install["auth[access_token]"]
    portal.ok("event.bind", token, {"event": "ONCRMLEADADD", "handler": app_server.url + "/lead"})
    portal.ok("event.bind", token, {"event": "ONAPPUNINSTALL", "handler": app_server.url + "/bye"})
    assert len(portal.emu.event_handlers()) == 2
    assert portal.uninstall(clean=True) == (200, {"event_status": 200})
    [event] = app_server.posts("/callback")[1:]
    assert event == {"event": "ONAPPUNINSTALL", "data[LANGUAGE_ID]": "en", "data[CLEAN]": "1",
                     "ts": str(int(portal.clock.now)), "auth[domain]": HOST,
                     "auth[client_endpoint]": f"http://{HOST}/rest/", "auth[server_endpoint]": f"http://{HOST}/rest/",
                     "auth[member_id]": portal.emu.member_id,
                     "auth[application_token]": install["auth[application_token]"]}
    [bound] = app_server.posts("/bye")  # a binding of the app's own to ONAPPUNINSTALL gets it too
    assert bound["event"] == "ONAPPUNINSTALL" and "auth[access_token]" not in bound and bound["event_handler_id"]
    assert portal.emu.event_handlers() == []  # its bindings are gone
    assert portal.rest("app.info", token)[1]["error"] == "invalid_token"
    assert portal.stats()["app"] == {"installed": False, "client_id": APP[0], "domain": HOST}
    assert portal.uninstall() == (409, {"error": "NOT_INSTALLED",
                                        "error_description": "The application is not installed on this portal"})
    portal.client.post(BASE + "crm.lead.add", json={"fields": {"TITLE": "L"}})
    assert portal.emu.wait_events(5) and app_server.posts("/lead") == []


def test_an_app_never_fully_installed_is_not_told_of_its_uninstallation():
    server = AppServer(page="<html>no finish</html>")
    try:
        portal = Portal()
        portal.install(server.url + "/install")
        assert portal.uninstall() == (200, {"event_status": None})
        assert [r["path"] for r in server.requests] == ["/install"]
    finally:
        server.close()


# ---- renaming the portal -----------------------------------------------------------------------------


def test_a_renamed_portal_redirects_rest_calls_and_names_its_new_address(app_server):
    portal, install = installed(app_server)
    status, state = portal.control(domain="localhost:5002")
    assert status == 200 and state["domain"] == "localhost:5002" and state["former_domains"] == [HOST]
    response = portal.client.post("/rest/crm.deal.add.json?x=1", json={"auth": install["auth[access_token]"]},
                                  headers={"Host": HOST})
    assert response.status_code == 302 and response.get_data() == b""
    assert response.headers["Location"] == "http://localhost:5002/rest/crm.deal.add.json?x=1"
    webhook = portal.client.get(BASE + "profile", headers={"Host": HOST})
    assert webhook.status_code == 302 and webhook.headers["Location"] == "http://localhost:5002/rest/1/demo/profile"
    assert portal.emu.records["deal"] == {}  # nothing ran on the old address
    assert portal.rest("profile", install["auth[access_token]"], host="localhost:5002")[0] == 200
    status, body = portal.refresh(install["auth[refresh_token]"])  # the authorization server did not move
    assert status == 200 and body["client_endpoint"] == "http://localhost:5002/rest/"
    assert portal.stats()["app"]["domain"] == "localhost:5002" and portal.stats()["by_status"]["302"] == 2
    # Events name the new address too.
    portal.ok("event.bind", body["access_token"], {"event": "ONCRMDEALADD", "handler": app_server.url + "/deal"},
              host="localhost:5002")
    portal.rest("crm.deal.add", body["access_token"], {"fields": {"TITLE": "D"}}, host="localhost:5002")
    assert portal.emu.wait_events(5)
    assert app_server.posts("/deal")[0]["auth[domain]"] == "localhost:5002"


def test_a_renamed_portal_over_http_redirects_and_the_post_repeated_there_runs(app_server):
    running = start_server(create_emulator(app=APP, limits=False))
    try:
        old = f"127.0.0.1:{running.port}"
        requests.post(f"http://{old}/_emulator/install", json={"handler": app_server.url + "/callback", "ui": False},
                      timeout=30)
        token = app_server.posts("/callback")[0]["auth[access_token]"]
        new = f"localhost:{running.port}"
        assert requests.post(f"http://{old}/_emulator/oauth", json={"domain": new}, timeout=5).json()["domain"] == new
        params = {"auth": token, "fields": {"TITLE": "Moved"}}
        response = requests.post(f"http://{old}/rest/crm.deal.add", json=params, allow_redirects=False, timeout=5)
        assert response.status_code == 302 and response.headers["Location"] == f"http://{new}/rest/crm.deal.add"
        # Repeat the POST on the new address, as change-domen.html says to.
        again = requests.post(response.headers["Location"], json=params, allow_redirects=False, timeout=5)
        assert again.status_code == 200 and running.emulator.records["deal"][1]["TITLE"] == "Moved"
    finally:
        running.stop()


# ---- stats, many portals, the command line ------------------------------------------------------------


def test_stats_count_refreshes_and_show_the_app(app_server):
    portal = Portal()
    assert portal.stats()["app"] == {"installed": False, "client_id": APP[0], "domain": None}
    assert (portal.stats()["oauth_refreshes"], portal.stats()["oauth_refresh_errors"]) == (0, 0)
    portal.install(app_server.url + "/callback", ui=False)
    event = app_server.posts("/callback")[0]
    portal.refresh(event["auth[refresh_token]"])
    portal.refresh(event["auth[refresh_token]"])  # used: refused
    portal.refresh("nope", client_secret="wrong")
    portal.refresh("x", grant_type="authorization_code", code="y")  # not a refresh: not counted
    stats = portal.stats()
    assert (stats["oauth_refreshes"], stats["oauth_refresh_errors"]) == (3, 2)
    assert stats["app"] == {"installed": True, "client_id": APP[0], "domain": HOST}
    assert "access_token" not in json.dumps(stats) and APP[1] not in json.dumps(stats)
    status, state = portal.control()
    assert status == 200 and APP[1] not in json.dumps(state) and event["auth[application_token]"] not in json.dumps(state)
    assert portal.client.get("/_emulator/oauth").json == state


def test_every_portal_has_the_app_and_a_token_finds_the_portal_that_issued_it(app_server):
    portals = create_portals(3, clock=FakeClock(), app=APP)
    client = Client(portals)
    response = client.post("/_emulator/install?portal=2", json={"handler": app_server.url + "/callback", "ui": False},
                           headers={"Host": HOST})
    assert response.json["domain"] == "portal-2.bitrix24.test" and response.json["installed"] is True
    assert client.post("/_emulator/install", json={"handler": app_server.url + "/callback"},
                       headers={"Host": HOST}).json["error"] == "PORTAL_REQUIRED"
    event = app_server.posts("/callback")[0]
    assert event["auth[member_id]"] == portals.portal(2).member_id
    assert event["auth[client_endpoint]"] == "http://portal-2.bitrix24.test/rest/"
    # A REST call on an address that is no portal's reaches the portal that issued the token.
    response = client.post("/rest/crm.contact.add", json={"auth": event["auth[access_token]"],
                                                          "fields": {"NAME": "Ann"}}, headers={"Host": HOST})
    assert response.status_code == 200
    assert [len(p.records["contact"]) for p in portals.portals] == [0, 1, 0]
    # The authorization server finds the portal by the refresh token, whatever the Host.
    response = client.get("/oauth/token/", headers={"Host": "portal-1.bitrix24.test"}, query_string={
        "grant_type": "refresh_token", "client_id": APP[0], "client_secret": APP[1],
        "refresh_token": event["auth[refresh_token]"]})
    assert response.status_code == 200 and response.json["member_id"] == portals.portal(2).member_id
    assert response.json["domain"] == "localhost"  # the server's own address, not portal 1's domain
    refused = client.get("/oauth/token/", query_string={
        "grant_type": "refresh_token", "client_id": APP[0], "client_secret": APP[1], "refresh_token": "unknown"})
    assert refused.status_code == 400 and refused.json["error"] == "invalid_grant"
    unknown = client.post("/rest/profile", json={"auth": "unknown"}, headers={"Host": HOST})
    assert (unknown.status_code, unknown.json["error"]) == (401, "invalid_token")
    stats = portals.stats()
    assert (stats["oauth_refreshes"], stats["oauth_refresh_errors"], stats["apps_installed"]) == (2, 1, 1)
    assert [p["app"]["installed"] for p in stats["by_portal"]] == [False, True, False]
    assert [p["oauth_refreshes"] for p in stats["by_portal"]] == [0, 1, 0]
    # Renaming a portal to another's domain is refused.
    taken = client.post("/_emulator/oauth?portal=2", json={"domain": "portal-3.bitrix24.test"}, headers={"Host": HOST})
    assert taken.status_code == 409 and taken.json["error"] == "DOMAIN_TAKEN"
    moved = client.post("/_emulator/oauth?portal=2", json={"domain": "crm.example.test"}, headers={"Host": HOST})
    assert moved.status_code == 200
    redirect = client.get("/rest/1/demo2/profile", headers={"Host": "portal-2.bitrix24.test"})
    assert redirect.status_code == 302 and redirect.headers["Location"] == "http://crm.example.test/rest/1/demo2/profile"
    assert client.get("/rest/1/demo2/profile", headers={"Host": "crm.example.test"}).status_code == 200


def test_the_command_line_takes_the_app_and_the_access_ttl():
    args = build_parser().parse_args(["--app", "local.app1:s3:cret", "--access-ttl", "60"])
    options = emulator_options(args)
    assert options["app"] == ("local.app1", "s3:cret") and options["access_ttl"] == 60.0
    emu = create_emulator(**options)
    assert emu.oauth.credentials == ("local.app1", "s3:cret") and emu.oauth.access_ttl == 60.0
    defaults = emulator_options(build_parser().parse_args([]))
    assert defaults["app"] is None and defaults["access_ttl"] == 3600.0
    portals = create_portals(2, **emulator_options(build_parser().parse_args(["--app", "a:b"])))
    assert [p.oauth.client_id for p in portals.portals] == ["a", "a"]
    for bad in (["--app", "nocolon"], ["--app", ":secret"], ["--app", "id:"], ["--access-ttl", "0"],
                ["--access-ttl", "inf"]):
        with pytest.raises(SystemExit):
            emulator_options(build_parser().parse_args(bad))


def test_without_an_app_there_is_nothing_to_install_and_no_token_works():
    portal = Portal(emu=create_emulator(clock=FakeClock()))
    assert portal.post_json("/_emulator/install", {"handler": "http://127.0.0.1:9/x"})[1]["error"] == "NO_APP"
    assert portal.refresh("x")[0] == 401
    assert portal.rest("profile", "x")[1]["error"] == "invalid_token"
    assert portal.stats()["app"] == {"installed": False, "client_id": None, "domain": None}


def test_options_that_cannot_work():
    for app in ("id:secret", ("id",), ("id", ""), ("id", 5)):
        with pytest.raises(ValueError):
            create_emulator(app=app)
    with pytest.raises(ValueError):
        create_emulator(app=APP, access_ttl=0)


# ---- bad input to the new endpoints: 4xx JSON, never 5xx ----------------------------------------------

NOWHERE = "http://127.0.0.1:9/never"
HUGE = "x" * 1_000_000
BAD_ADMIN = [
    ("/_emulator/install", b"{"), ("/_emulator/install", b"[]"), ("/_emulator/install", b"null"),
    ("/_emulator/install", b'"x"'), ("/_emulator/install", b"[" * 100_000), ("/_emulator/install", b"\xff\xfe"),
    ("/_emulator/install", {}), ("/_emulator/install", {"handler": 5}), ("/_emulator/install", {"handler": "ftp://x/"}),
    ("/_emulator/install", {"handler": "http://"}), ("/_emulator/install", {"handler": "http://x:99999/"}),
    ("/_emulator/install", {"handler": "http://[::1/"}), ("/_emulator/install", {"handler": "http://a b/"}),
    ("/_emulator/install", {"handler": "http://x/" + HUGE}), ("/_emulator/install", {"handler": NOWHERE, "ui": "yes"}),
    ("/_emulator/install", {"handler": NOWHERE, "ui": 10**400}), ("/_emulator/install", {"handler": NOWHERE, "ui": 1}),
    ("/_emulator/install", {"handler": NOWHERE, "scope": 5}), ("/_emulator/install", {"handler": NOWHERE, "scope": "crm,nope"}),
    ("/_emulator/install", {"handler": NOWHERE, "scope": [1]}), ("/_emulator/install", {"handler": NOWHERE, "scope": HUGE}),
    ("/_emulator/install", {"handler": NOWHERE, "language": ["en"]}),
    ("/_emulator/install", {"handler": NOWHERE, "language": "english"}),
    ("/_emulator/install", {"handler": NOWHERE, "event_handler": {"a": 1}}),
    ("/_emulator/install", {"handler": NOWHERE, "nope": 1}), ("/_emulator/install", {"handler": NOWHERE, HUGE: 1}),
    ("/_emulator/uninstall", {"clean": "yes"}), ("/_emulator/uninstall", {"clean": 1e400}),
    ("/_emulator/uninstall", b"{]"), ("/_emulator/uninstall", {}),  # not installed: 409
    ("/_emulator/oauth", {"expire": 1}), ("/_emulator/oauth", {"revoke": "true"}),
    ("/_emulator/oauth", {"payment_required": None}), ("/_emulator/oauth", {"domain": 5}),
    ("/_emulator/oauth", {"domain": "a b"}), ("/_emulator/oauth", {"domain": HUGE}),
    ("/_emulator/oauth", {"domain": "host:99999"}), ("/_emulator/oauth", {"domain": "host:0"}),
    ("/_emulator/oauth", {"domain": ""}), ("/_emulator/oauth", {"domain": "http://x/"}),
    ("/_emulator/oauth", {"nope": True}), ("/_emulator/oauth", b"1e999"),
]


@pytest.mark.parametrize(("path", "body"), BAD_ADMIN, ids=range(len(BAD_ADMIN)))
def test_bad_input_to_the_admin_endpoints_is_a_4xx_json(path, body):
    portal = Portal()
    data = body if isinstance(body, bytes) else json.dumps(body)
    response = portal.client.post(path, data=data, content_type="application/json", headers={"Host": HOST})
    assert 400 <= response.status_code < 500, response.get_data()[:300]
    assert set(response.json) == {"error", "error_description"} and response.json["error"]
    assert portal.emu.events_sent == [] and portal.emu.oauth.status == "absent"


def test_admin_endpoints_take_post_only():
    portal = Portal()
    for path in ("/_emulator/install", "/_emulator/uninstall"):
        response = portal.client.get(path)
        assert response.status_code == 405 and response.json["error"] == "METHOD_NOT_ALLOWED"
    assert portal.client.put("/_emulator/oauth", json={}).status_code == 405


BAD_TOKEN_REQUESTS = [
    "grant_type[]=refresh_token&client_id=a&client_secret=b&refresh_token=c",
    "grant_type=refresh_token&client_id[a]=b&client_secret=b&refresh_token=c",
    "grant_type=refresh_token&client_id={id}&client_secret={secret}&refresh_token[]=c",
    "grant_type=refresh_token&client_id={id}&client_secret={secret}&refresh_token=" + "z" * 100_000,
    "grant_type=refresh_token&client_id={id}&client_secret=" + "s" * 100_000 + "&refresh_token=c",
    "grant_type=" + "g" * 100_000, "", "%ff%fe=%00", "grant_type=refresh_token&client_id=%00&client_secret=%ff",
]


@pytest.mark.parametrize("query", BAD_TOKEN_REQUESTS, ids=range(len(BAD_TOKEN_REQUESTS)))
def test_bad_input_to_the_token_endpoint_is_a_4xx_json(query):
    portal = Portal()
    query = query.replace("{id}", APP[0]).replace("{secret}", APP[1])
    for response in (portal.client.get(f"/oauth/token/?{query}"),
                     portal.client.post("/oauth/token/", data=query, content_type="application/x-www-form-urlencoded"),
                     portal.client.post("/oauth/token/", data=b"{garbage", content_type="application/json")):
        assert 400 <= response.status_code < 500 and set(response.json) == {"error", "error_description"}


@pytest.mark.parametrize("token", [["a"], {"a": 1}, 10**400, 1e308, True, "x" * 100_000, "\x00"])
def test_a_token_of_the_wrong_shape_is_invalid_token(token):
    portal = Portal()
    status, body = portal.rest("profile", token)
    assert (status, body["error"]) == (401, "invalid_token")


HOSTILE_OAUTH = [
    None, {"event": ["x"]}, {"event": {"a": 1}, "handler": ["x"]}, {"event": "ONCRMDEALADD", "handler": {"x": 1}},
    {"event": "ONCRMDEALADD", "handler": "https://a.test/", "auth_type": ["x"], "event_type": ["x"]},
    {"event": "ONCRMDEALADD", "handler": "https://a.test/", "auth_type": 10**400},
    {"event": "ONCRMDEALADD", "event_type": "offline", "auth_connector": {"a": 1}},
    {"event": "ONOFFLINEEVENT", "handler": "https://a.test/", "options": {"minTimeout": ["x"]}},
    {"event": "ONOFFLINEEVENT", "handler": "https://a.test/o", "options": {"minTimeout": 10**400}},
    {"scope": ["x"], "full": {"a": 1}}, {"name": ["x"]}, {"filter": "x", "limit": "y", "clear": ["z"]},
]


@pytest.mark.parametrize("method", ["events", "event.bind", "event.unbind", "event.get", "event.offline.get",
                                    "event.offline.clear", "event.offline.error", "event.offline.list", "app.info",
                                    "scope", "methods", "method.get", "profile", "user.current", "batch"])
def test_no_parameters_make_a_method_called_with_a_token_answer_5xx(app_server, method):
    portal, event = installed(app_server, rate=1e9, burst=1e9)
    for payload in HOSTILE_OAUTH:
        status, body = portal.rest(method, event["auth[access_token]"], payload)
        assert status < 500 and ("result" in body or "error" in body), (payload, status, body)
