"""App mode through our public endpoints, with the portal and the OAuth server mocked by ``responses``.

``FakeOAuth`` plays https://oauth.bitrix.info/oauth/token/ the way the docs describe it
(https://apidocs.bitrix24.com/settings/oauth/auto-renewal.html): every refresh returns a new pair and
the refresh token used is spent. The portal's REST answers check the access token the same way. The
real-HTTP run of the same story, across processes, is tests/integration/test_app_mode_e2e.py.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from flask_bitrix24.extensions import db
from flask_bitrix24.models.standalone import AppInstallation, BitrixEvent

from tests.conftest import sent_params

CLIENT_ID, CLIENT_SECRET = "local.66f1a2b3c4d5e6.12345678", "app-secret-0123456789abcdef"
OAUTH = "https://oauth.bitrix.info/oauth/token/"
HOST = "acme.bitrix24.com"
ENDPOINT = f"https://{HOST}/rest/"
MEMBER = "a223c6b3710f85df22e9377d6c4f7553"
APP_TOKEN = "51856fefc120afa4b628cc82d3935cce"


class FakeOAuth:
    """The OAuth server and the portal's token check, in one place."""

    def __init__(self, mock: responses.RequestsMock, *, endpoint: str = ENDPOINT, member: str = MEMBER) -> None:
        self.mock, self.endpoint, self.member = mock, endpoint, member
        self.counter = itertools.count(1)
        self.refresh_tokens: dict[str, str] = {}  # refresh -> its access token
        self.valid_access: set[str] = set()
        self.expired: set[str] = set()
        self.refreshes = 0
        self.answer_error: tuple[int, dict] | None = None
        self.lock = threading.Lock()
        mock.add_callback(responses.GET, OAUTH, callback=self._token)

    def issue(self) -> tuple[str, str]:
        n = next(self.counter)
        access, refresh = f"access-token-{n:04d}-abcdef", f"refresh-token-{n:04d}-abcdef"
        self.refresh_tokens[refresh] = access
        self.valid_access.add(access)
        return access, refresh

    def expire_all(self) -> None:
        self.expired |= self.valid_access

    def _token(self, request):
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        with self.lock:
            if query.get("grant_type") == "refresh_token":
                self.refreshes += 1
            if (query.get("client_id"), query.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
                return 401, {}, '{"error":"invalid_client","error_description":"Wrong client"}'
            if self.answer_error is not None:
                status, body = self.answer_error
                import json

                return status, {}, json.dumps(body)
            old_access = self.refresh_tokens.pop(query.get("refresh_token", ""), None)
            if old_access is None:
                return 400, {}, '{"error":"invalid_grant","error_description":"Invalid grant"}'
            self.valid_access.discard(old_access)
            access, refresh = self.issue()
        import json

        return 200, {}, json.dumps({
            "access_token": access, "refresh_token": refresh, "expires_in": 3600, "expires": 1790003600,
            "client_endpoint": self.endpoint, "server_endpoint": "https://oauth.bitrix.info/rest/",
            "domain": "oauth.bitrix.info", "member_id": self.member, "scope": "crm,task", "status": "L",
            "user_id": 1})

    def app_info(self) -> list:
        """The portal's app.info: takes any access token it issued (the proof an event's token gives)."""
        return self.rest("app.info", {"ID": 7, "CODE": CLIENT_ID, "INSTALLED": True})

    def rest(self, method: str, result, *, endpoint: str | None = None) -> list:
        """Answer ``method`` on the portal with ``result`` for a valid token; remember each call's token."""
        seen = []
        import json

        def answer(request):
            token = sent_params_of(request).get("auth")
            seen.append(token)
            with self.lock:
                if token in self.expired and token in self.valid_access:
                    return 401, {}, '{"error":"expired_token","error_description":"The access token provided has expired."}'
                if token not in self.valid_access:
                    return 401, {}, '{"error":"invalid_token","error_description":"Unable to get application by token"}'
            return 200, {}, json.dumps({"result": result, "time": {"operating": 0}})

        self.mock.add_callback(responses.POST, f"{endpoint or self.endpoint}{method}.json", callback=answer)
        return seen


def sent_params_of(request) -> dict:
    from flask_bitrix24.services.wire import parse_php_form

    return parse_php_form(request.body or b"")


@pytest.fixture
def app_mode(make_app):
    return make_app(BITRIX_APP_CLIENT_ID=CLIENT_ID, BITRIX_APP_CLIENT_SECRET=CLIENT_SECRET,
                    BITRIX_OAUTH_SERVER="https://oauth.bitrix.info/")


@pytest.fixture
def oauth(portal):
    return FakeOAuth(portal)


def install_form(oauth: FakeOAuth | None, *, member: str = MEMBER, app_token: str = APP_TOKEN,
                 refresh: str | None = None, event: str = "ONAPPINSTALL") -> dict[str, str]:
    """What the portal posts with ONAPPINSTALL
    (https://apidocs.bitrix24.com/api-reference/common/events/on-app-install.html)."""
    form = {"event": event, "data[VERSION]": "1", "data[ACTIVE]": "Y", "data[INSTALLED]": "Y",
            "data[LANGUAGE_ID]": "en", "ts": "1790000000", "auth[domain]": HOST, "auth[client_endpoint]": ENDPOINT,
            "auth[server_endpoint]": "https://oauth.bitrix.info/rest/", "auth[member_id]": member,
            "auth[status]": "L", "auth[application_token]": app_token}
    if oauth is not None or refresh is not None:
        access, issued = oauth.issue() if refresh is None else ("access-x-abcdef", refresh)
        form.update({"auth[access_token]": access, "auth[refresh_token]": issued, "auth[expires_in]": "3600",
                     "auth[scope]": "crm,task"})
    return form


def installed_and_linked(client, oauth, client_id: int = 7) -> None:
    r = client.post("/api/bitrix/app/install", data=install_form(oauth))
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["result"]["action"] == "installed"
    r = client.post(f"/api/bitrix/clients/{client_id}/config", json={"member_id": MEMBER})
    assert r.status_code in (200, 201), r.get_json()


def stored(app) -> AppInstallation:
    with app.app_context():
        return db.session.query(AppInstallation).one()


# -- install, link, call ------------------------------------------------------------------------------


def test_install_link_and_crud_with_the_apps_token(app_mode, oauth):
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    assert oauth.refreshes == 1  # the install's tokens were checked with the OAuth server, once
    tokens = oauth.rest("crm.contact.add", 42)
    r = client.post("/api/bitrix/clients/7/contacts", json={"fields": {"NAME": "Ann"}})
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["result"] == 42
    call = oauth.mock.calls[-1]
    assert call.request.url == f"{ENDPOINT}crm.contact.add.json"
    assert sent_params(call)["fields"] == {"NAME": "Ann"}
    assert tokens == ["access-token-0002-abcdef"]  # the pair the OAuth server gave, not the event's
    view = client.get("/api/bitrix/clients/7/config").get_json()["result"]
    assert view["source"] == "app" and view["member_id"] == MEMBER and view["portal_domain"] == HOST
    assert view["app"]["status"] == "active" and view["app"]["events_verified"] is True
    listed = client.get("/api/bitrix/app/installations").get_json()["result"]
    assert [(i["member_id"], i["client_id"], i["client_endpoint"]) for i in listed] == [(MEMBER, 7, ENDPOINT)]


def test_secrets_are_encrypted_at_rest_and_never_answered_or_logged(app_mode, oauth, caplog):
    caplog.set_level(logging.DEBUG)
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    oauth.rest("crm.contact.get", {"ID": "1"})
    client.get("/api/bitrix/clients/7/contacts/1")
    row = stored(app_mode)
    secrets = ["access-token-0002-abcdef", "refresh-token-0002-abcdef", APP_TOKEN, CLIENT_SECRET]
    answers = "".join(client.get(p).get_data(as_text=True) for p in (
        "/api/bitrix/app/installations", "/api/bitrix/clients/7/config", "/api/bitrix/clients/7/config/debug",
        f"/api/bitrix/app/installations/{MEMBER}", "/api/bitrix/openapi.json"))
    for secret in secrets:
        assert secret not in (row.credentials or "")
        assert secret not in answers
        assert secret not in caplog.text
    with app_mode.app_context():
        (event,) = db.session.query(BitrixEvent).all()
    assert event.event == "ONAPPINSTALL" and "application_token" not in event.payload["auth"]
    assert "refresh_token" not in event.payload["auth"] and "access_token" not in event.payload["auth"]


def test_an_expired_token_is_refreshed_once_and_the_call_repeated(app_mode, oauth):
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    seen = oauth.rest("crm.contact.get", {"ID": "5", "NAME": "Ann"})
    oauth.expire_all()
    r = client.get("/api/bitrix/clients/7/contacts/5")
    assert r.status_code == 200, r.get_json()
    assert oauth.refreshes == 2 and seen == ["access-token-0002-abcdef", "access-token-0003-abcdef"]
    row = stored(app_mode)
    assert row.token_version == 2 and row.refreshed_at is not None
    client.get("/api/bitrix/clients/7/contacts/5")
    assert oauth.refreshes == 2  # the new token is used from then on; no refresh before calls


def test_threads_that_meet_an_expired_token_together_refresh_once(app_mode, oauth):
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    oauth.rest("crm.contact.get", {"ID": "5"})
    client.get("/api/bitrix/clients/7/contacts/5")  # every thread starts from the cached token
    oauth.expire_all()
    before = oauth.refreshes
    statuses, barrier = [], threading.Barrier(12)

    def call():
        barrier.wait()
        statuses.append(app_mode.test_client().get("/api/bitrix/clients/7/contacts/5").status_code)

    threads = [threading.Thread(target=call) for _ in range(12)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert statuses == [200] * 12
    assert oauth.refreshes - before == 1


def test_a_pair_another_process_stored_is_taken_without_asking_the_server(app_mode, oauth):
    """Another process refreshed (its new pair is in the database, ours is now refused as invalid):
    the stored pair is used and the OAuth server is not asked."""
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    seen = oauth.rest("crm.contact.get", {"ID": "5"})
    client.get("/api/bitrix/clients/7/contacts/5")
    rt = app_mode.extensions["bitrix24"]
    with app_mode.app_context():  # the other process: renews with the stored pair's own token
        used = rt.installations.tokens(MEMBER)
        rt.installations.renew(MEMBER, used.access_token, lambda token: rt.oauth.refresh(token, MEMBER))
    before = oauth.refreshes
    r = client.get("/api/bitrix/clients/7/contacts/5")
    assert r.status_code == 200 and oauth.refreshes == before
    assert seen[-2:] == ["access-token-0002-abcdef", "access-token-0003-abcdef"]


def test_a_revoked_refresh_token_stops_the_installation_without_a_retry_storm(app_mode, oauth):
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    seen = oauth.rest("crm.contact.get", {"ID": "5"})
    oauth.refresh_tokens.clear()  # revoked (or 180 days unused)
    oauth.expire_all()
    r = client.get("/api/bitrix/clients/7/contacts/5")
    assert r.status_code == 409
    body = r.get_json()
    assert body["error"] == "APP_REAUTHORIZATION_REQUIRED" and "reinstall" in body["error_description"]
    refreshes, calls = oauth.refreshes, len(seen)
    for _ in range(5):
        again = client.get("/api/bitrix/clients/7/contacts/5")
        assert again.get_json()["error"] == "APP_REAUTHORIZATION_REQUIRED"
    assert (oauth.refreshes, len(seen)) == (refreshes, calls)  # neither the server nor the portal asked again
    view = client.get(f"/api/bitrix/app/installations/{MEMBER}").get_json()["result"]
    assert (view["status"], view["problem"]) == ("needs_attention", "invalid_grant")
    metrics = client.get("/api/bitrix/metrics").get_data(as_text=True)
    assert 'bitrix24_oauth_refreshes_total{result="invalid_grant"} 1.0' in metrics
    # A reinstall gives new tokens and clears the problem; the client stays linked.
    r = client.post("/api/bitrix/app/install", data=install_form(oauth))
    assert r.get_json()["result"]["action"] == "reinstalled"
    assert client.get("/api/bitrix/clients/7/contacts/5").status_code == 200


def test_payment_required_on_a_call_marks_the_installation_until_paid(app_mode, oauth, portal):
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    portal.post(f"{ENDPOINT}crm.deal.list.json", status=401,
                json={"error": "PAYMENT_REQUIRED", "error_description": "Payment required"})
    r = client.get("/api/bitrix/clients/7/deals")
    assert r.status_code == 409 and r.get_json()["error"] == "PAYMENT_REQUIRED"
    calls = len(portal.calls)
    assert client.get("/api/bitrix/clients/7/deals").get_json()["error"] == "PAYMENT_REQUIRED"
    assert len(portal.calls) == calls  # not sent again
    # ONAPPPAYMENT (checked by the application token) lets calls try again.
    paid = install_form(None, event="ONAPPPAYMENT")
    r = client.post("/api/bitrix/app/install", data=paid)
    assert r.status_code == 200 and r.get_json()["result"]["action"] == "resumed"
    assert client.get(f"/api/bitrix/app/installations/{MEMBER}").get_json()["result"]["status"] == "active"


def test_payment_required_from_the_oauth_server(app_mode, oauth):
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    oauth.rest("crm.contact.get", {"ID": "5"})
    oauth.expire_all()
    oauth.answer_error = (400, {"error": "PAYMENT_REQUIRED", "error_description": "Payment required"})
    r = client.get("/api/bitrix/clients/7/contacts/5")
    assert r.get_json()["error"] == "PAYMENT_REQUIRED"
    r = client.post(f"/api/bitrix/app/installations/{MEMBER}/resume")
    assert r.status_code == 200 and r.get_json()["result"]["status"] == "active"


# -- what is refused --------------------------------------------------------------------------------


def test_a_forged_install_is_stored_nowhere(app_mode, oauth):
    client = app_mode.test_client()
    r = client.post("/api/bitrix/app/install", data=install_form(None, refresh="made-up-refresh-token"))
    assert r.status_code == 401 and r.get_json()["error"] == "INSTALL_NOT_VERIFIED"
    with app_mode.app_context():
        assert db.session.query(AppInstallation).count() == 0
        assert db.session.query(BitrixEvent).count() == 0


def test_an_install_naming_another_portal_than_its_tokens_is_refused(app_mode, oauth):
    """Tokens of the attacker's own portal, with the victim's member_id: the OAuth server's answer
    names the real portal, so the claim is refused."""
    client = app_mode.test_client()
    r = client.post("/api/bitrix/app/install", data=install_form(oauth, member="f" * 32))
    assert r.status_code == 401 and "another portal" in r.get_json()["error_description"]
    with app_mode.app_context():
        assert db.session.query(AppInstallation).count() == 0


def test_forged_app_events_are_refused_and_stored_nowhere(app_mode, oauth):
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    with app_mode.app_context():
        before = db.session.query(BitrixEvent).count()
    forged = install_form(None, event="ONAPPUNINSTALL", app_token="0" * 32)
    assert client.post("/api/bitrix/app/install", data=forged).status_code == 401
    crm = {"event": "ONCRMCONTACTADD", "data[FIELDS][ID]": "9", "ts": "1790000001", "auth[domain]": HOST,
           "auth[member_id]": MEMBER, "auth[application_token]": "0" * 32}
    assert client.post("/api/bitrix/webhook", data=crm).status_code == 401
    assert client.post("/api/bitrix/clients/7/webhook", data=crm).status_code == 401
    with app_mode.app_context():
        assert db.session.query(BitrixEvent).count() == before
    assert stored(app_mode).status == "active"


def test_app_events_are_checked_by_the_installations_token_and_reach_its_client(app_mode, oauth):
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    crm = {"event": "ONCRMCONTACTADD", "data[FIELDS][ID]": "9", "ts": "1790000001", "auth[domain]": HOST,
           "auth[member_id]": MEMBER, "auth[application_token]": APP_TOKEN,
           "auth[access_token]": "event-access-token-abcdef", "auth[client_endpoint]": ENDPOINT}
    r = client.post("/api/bitrix/webhook", data=crm)
    assert r.status_code == 200, r.get_json()
    events = client.get("/api/bitrix/clients/7/events").get_json()["result"]
    assert [e["event"] for e in events][:1] == ["ONCRMCONTACTADD"]
    assert "access_token" not in events[0]["payload"]["auth"]


def test_a_duplicate_install_event_changes_nothing(app_mode, oauth):
    client = app_mode.test_client()
    form = install_form(oauth)
    assert client.post("/api/bitrix/app/install", data=form).get_json()["result"]["action"] == "installed"
    version = stored(app_mode).token_version
    r = client.post("/api/bitrix/app/install", data=form)  # the same delivery: its refresh token is spent
    assert r.status_code == 200 and r.get_json()["result"]["action"] == "duplicate"
    assert stored(app_mode).token_version == version and stored(app_mode).status == "active"


def test_uninstall_keeps_no_tokens_and_calls_say_so(app_mode, oauth):
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    r = client.post("/api/bitrix/app/install", data=install_form(None, event="ONAPPUNINSTALL"))
    assert r.status_code == 200 and r.get_json()["result"]["action"] == "uninstalled"
    row = stored(app_mode)
    assert row.status == "uninstalled" and row.credentials is None and row.client_id == 7
    r = client.get("/api/bitrix/clients/7/contacts/1")
    assert r.status_code == 409 and r.get_json()["error"] == "APP_UNINSTALLED"
    # An event after the uninstall has no token to match.
    crm = {"event": "ONCRMCONTACTADD", "data[FIELDS][ID]": "9", "auth[member_id]": MEMBER,
           "auth[application_token]": APP_TOKEN, "auth[domain]": HOST}
    assert client.post("/api/bitrix/webhook", data=crm).status_code == 401


def test_the_install_page_is_verified_stored_and_finishes_the_install(app_mode, oauth):
    """An app with an interface: the admin's browser posts AUTH_ID/REFRESH_ID; the page we answer
    calls BX24.installFinish(); ONAPPINSTALL then brings the application token. Without tokens of its
    own (as in the docs' example) it is believed only with proof: its access token works on the portal."""
    client = app_mode.test_client()
    access, refresh = oauth.issue()
    page = {"AUTH_ID": access, "AUTH_EXPIRES": "3600", "REFRESH_ID": refresh, "member_id": MEMBER, "status": "L",
            "PLACEMENT": "DEFAULT", "PLACEMENT_OPTIONS": "{}"}
    r = client.post(f"/api/bitrix/app/install?DOMAIN={HOST}&PROTOCOL=1&LANG=en&APP_SID=x", data=page)
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert "BX24.installFinish()" in html and "//api.bitrix24.com/api/v1/" in html
    assert stored(app_mode).status == "active"
    assert client.get(f"/api/bitrix/app/installations/{MEMBER}").get_json()["result"]["events_verified"] is False
    # Tokenless and proofless (anyone who knows the member_id could send it): refused, nothing kept.
    r = client.post("/api/bitrix/app/install", data=install_form(None, app_token="9" * 32))
    assert r.status_code == 401 and r.get_json()["error"] == "INSTALL_NOT_VERIFIED"
    assert client.get(f"/api/bitrix/app/installations/{MEMBER}").get_json()["result"]["events_verified"] is False
    # With an access token the portal takes (app.info at the address the OAuth server gave): kept.
    proofs = oauth.app_info()
    event_access, _ = oauth.issue()
    proven = {**install_form(None), "auth[access_token]": event_access}
    r = client.post("/api/bitrix/app/install", data=proven)
    assert r.status_code == 200 and r.get_json()["result"]["action"] == "token_saved", r.get_json()
    assert proofs == [event_access]
    assert client.get(f"/api/bitrix/app/installations/{MEMBER}").get_json()["result"]["events_verified"] is True
    # A made-up access token proves nothing.
    forged = {**install_form(None, app_token="8" * 32), "auth[access_token]": "made-up-access-token"}
    assert client.post("/api/bitrix/app/install", data=forged).status_code == 401


def test_an_event_with_a_working_access_token_gives_a_missing_application_token(app_mode, oauth):
    """The install page came, its ONAPPINSTALL never did: the first app event whose access token the
    portal takes gives the application token; events without such proof are refused."""
    client = app_mode.test_client()
    access, refresh = oauth.issue()
    client.post("/api/bitrix/app/install", data={"AUTH_ID": access, "REFRESH_ID": refresh, "member_id": MEMBER})
    crm = {"event": "ONCRMCONTACTADD", "data[FIELDS][ID]": "9", "ts": "1790000001", "auth[domain]": HOST,
           "auth[member_id]": MEMBER, "auth[application_token]": APP_TOKEN}
    assert client.post("/api/bitrix/webhook", data=crm).status_code == 401
    oauth.app_info()
    event_access, _ = oauth.issue()
    assert client.post("/api/bitrix/webhook", data={**crm, "auth[access_token]": event_access}).status_code == 200
    assert client.post("/api/bitrix/webhook", data={**crm, "ts": "1790000002"}).status_code == 200  # known now
    other = {**crm, "auth[application_token]": "7" * 32, "auth[access_token]": event_access}
    assert client.post("/api/bitrix/webhook", data=other).status_code == 401  # one is kept: others must match


def test_linking_rules(app_mode, oauth):
    client = app_mode.test_client()
    installed_and_linked(client, oauth, client_id=7)
    r = client.post("/api/bitrix/clients/8/config", json={"member_id": MEMBER})
    assert r.status_code == 409 and r.get_json()["error"] == "INSTALLATION_LINKED"
    r = client.post("/api/bitrix/clients/8/config", json={"member_id": "b" * 32})
    assert r.status_code == 400 and "no installation" in r.get_json()["error_description"]
    r = client.post("/api/bitrix/clients/8/config", json={"member_id": MEMBER, "webhook_base": "x"})
    assert r.status_code == 400
    r = client.post("/api/bitrix/clients/8/config", json={"member_id": "../etc"})
    assert r.status_code == 400
    assert client.delete("/api/bitrix/clients/7/config").status_code == 200
    assert stored(app_mode).client_id is None
    r = client.post("/api/bitrix/clients/8/config", json={"member_id": MEMBER})
    assert r.status_code in (200, 201) and stored(app_mode).client_id == 8


def test_saving_a_webhook_takes_the_client_out_of_app_mode(app_mode, oauth, portal):
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    from tests.conftest import PORTAL_BASE

    r = client.post("/api/bitrix/clients/7/config", json={"webhook_base": PORTAL_BASE})
    assert r.status_code in (200, 201) and r.get_json()["result"]["source"] == "database"
    assert stored(app_mode).client_id is None


def test_app_mode_off(make_app):
    client = make_app().test_client()
    r = client.post("/api/bitrix/app/install", data={"event": "ONAPPINSTALL", "auth[member_id]": MEMBER})
    assert r.status_code == 404 and r.get_json()["error"] == "APP_MODE_OFF"
    assert client.get("/api/bitrix/app/installations").status_code == 404
    r = client.post("/api/bitrix/clients/1/config", json={"member_id": MEMBER})
    assert r.status_code == 400 and "app mode is off" in r.get_json()["error_description"]


@pytest.mark.parametrize("body", [
    {"event": "ONAPPINSTALL"},
    {"event": "ONAPPINSTALL", "auth[member_id]": "x" * 300, "auth[application_token]": APP_TOKEN},
    {"event": "ONAPPINSTALL", "auth[member_id]": MEMBER, "auth[application_token]": "\u00e9" * 40},
    {"AUTH_ID": "a"},
    {"REFRESH_ID": "r" * 5000, "member_id": MEMBER},
    {"something": "else"},
    {"event": "ONAPPUNINSTALL", "auth": "not-a-dict"},
])
def test_bad_install_requests_get_a_4xx(app_mode, oauth, body):
    r = app_mode.test_client().post("/api/bitrix/app/install", data=body)
    assert 400 <= r.status_code < 500 and r.is_json, r.get_data(as_text=True)
    assert oauth.refreshes == 0


def test_a_flood_of_made_up_installs_does_not_hammer_the_oauth_server(app_mode, oauth):
    """Refused checks are counted per client address (10 a minute, an IPv6 network as one): a flood is
    cut short, and a real install from an address that is not failing goes ahead, whichever portal."""
    client = app_mode.test_client()
    statuses = [client.post("/api/bitrix/app/install",
                            data=install_form(None, member=f"{i:032x}", refresh=f"made-up-refresh-{i:04d}"),
                            environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code for i in range(40)]
    assert oauth.refreshes == 10 and statuses.count(401) == 10 and statuses.count(429) == 30
    network = [client.post("/api/bitrix/app/install", data=install_form(None, refresh=f"made-up-{i:04d}-x"),
                           environ_base={"REMOTE_ADDR": f"2001:db8:0:0:{i}::1"}).status_code for i in range(20)]
    assert oauth.refreshes == 20 and network.count(429) == 10  # one /64, many addresses: one budget
    r = client.post("/api/bitrix/app/install", data=install_form(oauth), environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert r.status_code == 429  # the flooding address stays cut off for the minute
    r = client.post("/api/bitrix/app/install", data=install_form(oauth), environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert r.status_code == 200 and r.get_json()["result"]["action"] == "installed"  # the same portal, elsewhere


def test_an_access_token_of_another_app_proves_nothing(app_mode, oauth):
    """A token minted for another app on the same portal (app.info names that app) gives no
    application token; nor does one offered to replace a kept token."""
    client = app_mode.test_client()
    access, refresh = oauth.issue()
    client.post("/api/bitrix/app/install", data={"AUTH_ID": access, "REFRESH_ID": refresh, "member_id": MEMBER})
    oauth.rest("app.info", {"ID": 9, "CODE": "local.someone-else", "INSTALLED": True})
    other_access, _ = oauth.issue()
    r = client.post("/api/bitrix/app/install", data={**install_form(None), "auth[access_token]": other_access})
    assert r.status_code == 401
    assert client.get(f"/api/bitrix/app/installations/{MEMBER}").get_json()["result"]["events_verified"] is False


def test_a_kept_application_token_is_not_replaced_by_an_access_token_proof(app_mode, oauth):
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    oauth.app_info()
    access, _ = oauth.issue()
    forged = {**install_form(None, app_token="6" * 32), "auth[access_token]": access}
    assert client.post("/api/bitrix/app/install", data=forged).status_code == 401
    crm = {"event": "ONCRMCONTACTADD", "data[FIELDS][ID]": "9", "ts": "1790000001", "auth[domain]": HOST,
           "auth[member_id]": MEMBER, "auth[application_token]": APP_TOKEN}
    assert client.post("/api/bitrix/webhook", data=crm).status_code == 200  # the real token still works


def test_an_uninstall_racing_a_refresh_still_uninstalls(app_mode, oauth):
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    rt = app_mode.extensions["bitrix24"]
    from flask_bitrix24.services import app_install

    with app_mode.test_request_context():
        outcome = app_install.uninstall_event({"event": "ONAPPUNINSTALL", "data": {"CLEAN": "0"},
                                               "auth": {"member_id": MEMBER, "application_token": APP_TOKEN}})
        used = rt.installations.tokens(MEMBER)
        rt.installations.renew(MEMBER, used.access_token, lambda t: rt.oauth.refresh(t, MEMBER))  # lands between
        app_install.finish_uninstall(outcome)
    row = stored(app_mode)
    assert row.status == "uninstalled" and row.credentials is None


def test_a_renamed_portal_is_followed_by_member_id(app_mode, oauth, portal):
    """The old address answers 302; the OAuth server's answer names the new one, which is used (the
    redirect's Location is not followed)."""
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    new_endpoint = "https://acme-renamed.bitrix24.com/rest/"
    portal.post(f"{ENDPOINT}crm.contact.get.json", status=302, headers={"Location": "https://evil.example/rest/"})
    oauth.endpoint = new_endpoint
    seen = oauth.rest("crm.contact.get", {"ID": "5"}, endpoint=new_endpoint)
    r = client.get("/api/bitrix/clients/7/contacts/5")
    assert r.status_code == 200, r.get_json()
    assert len(seen) == 1 and not any("evil.example" in c.request.url for c in portal.calls)
    view = client.get(f"/api/bitrix/app/installations/{MEMBER}").get_json()["result"]
    assert view["client_endpoint"] == new_endpoint and view["domain"] == "acme-renamed.bitrix24.com"


# -- what the review found (each failed before its fix) -----------------------------------------------


def test_an_event_naming_a_new_address_is_checked_with_the_oauth_server_not_believed(app_mode, oauth):
    """A verified event names another REST address: the event is stored, the address it names is
    not used (it would decide where our token goes); the OAuth server is asked, and its answer wins."""
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    other = "https://attacker.bitrix24.com/rest/"
    leaked = oauth.rest("crm.contact.get", {"ID": "5"}, endpoint=other)
    seen = oauth.rest("crm.contact.get", {"ID": "5"})
    before = oauth.refreshes
    crm = {"event": "ONCRMCONTACTADD", "data[FIELDS][ID]": "9", "ts": "1790000001", "auth[member_id]": MEMBER,
           "auth[application_token]": APP_TOKEN, "auth[domain]": HOST, "auth[client_endpoint]": other}
    assert client.post("/api/bitrix/webhook", data=crm).status_code == 200
    assert oauth.refreshes - before == 1  # asked once; the server says the portal is where it was
    assert client.get("/api/bitrix/clients/7/contacts/5").status_code == 200
    assert leaked == [] and len(seen) == 1
    assert client.post("/api/bitrix/webhook", data={**crm, "ts": "1790000002"}).status_code == 200
    assert oauth.refreshes - before == 1  # not again so soon


def test_install_page_and_onappinstall_arriving_together_both_succeed(app_mode, oauth):
    access, refresh = oauth.issue()
    page = {"AUTH_ID": access, "REFRESH_ID": refresh, "member_id": MEMBER}
    event = install_form(oauth)
    out, barrier = {}, threading.Barrier(2)

    def post(name, data):
        barrier.wait()
        out[name] = app_mode.test_client().post(f"/api/bitrix/app/install?DOMAIN={HOST}", data=data).status_code

    threads = [threading.Thread(target=post, args=(n, d)) for n, d in (("page", page), ("event", event))]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert out == {"page": 200, "event": 200}
    row = stored(app_mode)
    assert row.status == "active" and row.token_version == 2


def test_a_process_holding_a_pair_two_generations_old_still_gets_through(app_mode, oauth):
    """This process cached pair 2; another refreshed to pair 3, and an hour later pair 3 has expired too."""
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    oauth.rest("crm.contact.get", {"ID": "5"})
    assert client.get("/api/bitrix/clients/7/contacts/5").status_code == 200
    rt = app_mode.extensions["bitrix24"]
    with app_mode.app_context():
        used = rt.installations.tokens(MEMBER)
        rt.installations.renew(MEMBER, used.access_token, lambda t: rt.oauth.refresh(t, MEMBER))
    oauth.expire_all()
    before = oauth.refreshes
    r = client.get("/api/bitrix/clients/7/contacts/5")
    assert r.status_code == 200, r.get_json()
    assert oauth.refreshes - before == 1


def test_redirects_and_refused_tokens_do_not_make_a_refresh_per_call(app_mode, oauth, portal):
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    portal.post(f"{ENDPOINT}crm.contact.get.json", status=302, headers={"Location": "https://elsewhere.bitrix24.com/"})
    portal.post(f"{ENDPOINT}crm.deal.get.json", status=401,
                json={"error": "invalid_token", "error_description": "Unable to get application by token"})
    before = oauth.refreshes
    moved = [client.get("/api/bitrix/clients/7/contacts/5").get_json()["error"] for _ in range(10)]
    refused = [client.get("/api/bitrix/clients/7/deals/5").status_code for _ in range(10)]
    assert set(moved) == {"PORTAL_MOVED"} and set(refused) == {502}
    assert oauth.refreshes - before == 1  # one look at where the portal went; none for invalid_token


def test_a_refreshed_pair_the_database_refuses_is_kept_and_stored_later(app_mode, oauth):
    """The OAuth server answered, then the write failed: the refresh token is spent, so the new pair
    must not be lost. The call goes through with it, and the next call stores it."""
    import sqlalchemy.exc

    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    oauth.rest("crm.contact.get", {"ID": "5"})
    oauth.expire_all()
    store = app_mode.extensions["bitrix24"].installations
    real, fail = store._encrypt, {"left": 4}

    def encrypt(secrets):  # every try to store the new pair fails (a failover), then the database is back
        if fail["left"]:
            fail["left"] -= 1
            raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("server closed the connection"))
        return real(secrets)

    store._encrypt = encrypt
    assert client.get("/api/bitrix/clients/7/contacts/5").status_code == 200
    assert oauth.refreshes == 2 and store.unsaved
    assert client.get("/api/bitrix/clients/7/contacts/5").status_code == 200
    assert not store.unsaved
    with app_mode.app_context():
        secrets = store.get(MEMBER, with_secrets=True).secrets
    assert secrets["refresh_token"] in oauth.refresh_tokens  # the live one, not the spent one


def test_no_database_lock_is_held_while_the_oauth_server_is_slow(app_mode, oauth):
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    oauth.rest("crm.contact.get", {"ID": "5"})
    client.get("/api/bitrix/clients/7/contacts/5")
    oauth.expire_all()
    real, entered, answered = oauth._token, threading.Event(), threading.Event()

    def slow(request):  # the OAuth server answers once the event below has had its answer (or after 30 s)
        entered.set()
        answered.wait(30)
        return real(request)

    oauth.mock.remove(responses.GET, OAUTH)
    oauth.mock.add_callback(responses.GET, OAUTH, callback=slow)
    caller = threading.Thread(target=lambda: app_mode.test_client().get("/api/bitrix/clients/7/contacts/5"))
    caller.start()
    assert entered.wait(10)
    crm = {"event": "ONCRMCONTACTADD", "data[FIELDS][ID]": "9", "ts": "1790000001", "auth[domain]": HOST,
           "auth[member_id]": MEMBER, "auth[application_token]": APP_TOKEN}
    started = time.monotonic()
    status = app_mode.test_client().post("/api/bitrix/webhook", data=crm).status_code
    took = time.monotonic() - started
    answered.set()
    caller.join(30)
    # Had the refresh held a lock the event's write needs, the write would have waited out the 30 s hold.
    assert status == 200 and took < 20  # the event's write did not wait for the refresh


def test_application_token_kept_while_a_refresh_commits(app_mode, oauth):
    """A token-saving write and a refresh at once: neither puts back what the other replaced."""
    client = app_mode.test_client()
    access, refresh = oauth.issue()
    client.post("/api/bitrix/app/install", data={"AUTH_ID": access, "REFRESH_ID": refresh, "member_id": MEMBER})
    client.post("/api/bitrix/clients/7/config", json={"member_id": MEMBER})
    oauth.rest("crm.contact.get", {"ID": "5"})
    oauth.app_info()
    client.get("/api/bitrix/clients/7/contacts/5")
    oauth.expire_all()
    event_access, _ = oauth.issue()
    proven = {**install_form(None), "auth[access_token]": event_access}
    results = []
    threads = [threading.Thread(target=lambda: results.append(
                   app_mode.test_client().post("/api/bitrix/app/install", data=proven).status_code)),
               threading.Thread(target=lambda: results.append(
                   app_mode.test_client().get("/api/bitrix/clients/7/contacts/5").status_code))]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert sorted(results) == [200, 200]
    with app_mode.app_context():
        secrets = app_mode.extensions["bitrix24"].installations.get(MEMBER, with_secrets=True).secrets
    assert secrets["refresh_token"] in oauth.refresh_tokens and secrets["application_token"] == APP_TOKEN


@pytest.mark.parametrize("method,path", [
    ("get", "/api/bitrix/app/installations/a%00b"),
    ("post", "/api/bitrix/app/installations/a%00b/resume"),
    ("get", "/api/bitrix/app/installations/%F0%9F%98%80"),
    ("get", "/api/bitrix/app/installations/" + "x" * 65),
])
def test_odd_installation_paths_are_404(app_mode, method, path):
    r = getattr(app_mode.test_client(), method)(path)
    assert r.status_code == 404 and r.is_json


@pytest.mark.parametrize("body", [
    {"event": "ONAPPPAYMENT", "auth": {"member_id": "a\u0000b", "application_token": "x"}},
    {"event": "ONAPPUNINSTALL", "auth": {"member_id": MEMBER, "application_token": "\ud800"}},
    {"event": "ONAPPPAYMENT", "auth": {"member_id": MEMBER, "application_token": "\ud800" * 10}},
    {"event": "ONAPPINSTALL", "auth": {"member_id": MEMBER, "application_token": "a" * 32}},
    {"member_id": MEMBER, "REFRESH_ID": ["x"]},
    {"event": 5},
    {"AUTH_ID": {"a": 1}},
])
def test_odd_json_to_the_install_handler_is_4xx(app_mode, oauth, body):
    client = app_mode.test_client()
    installed_and_linked(client, oauth)
    r = client.post("/api/bitrix/app/install", json=body)
    assert 400 <= r.status_code < 500 and r.is_json, r.get_data(as_text=True)
