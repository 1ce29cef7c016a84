"""The first event receiver: token checked in constant time per tenant, accepted events stored."""

from __future__ import annotations

from flask_bitrix24.extensions import db
from flask_bitrix24.models.standalone import BitrixEvent

from tests.conftest import PORTAL_BASE


def event_form(token="tok-c1-abcdef", domain="b24-test.bitrix24.com", event="ONCRMCONTACTADD", entity_id="89", ts="1724696255"):
    form = {
        "event": event,
        "event_handler_id": "975",
        "data[FIELDS][ID]": entity_id,
        "ts": ts,
        "auth[domain]": domain,
        "auth[client_endpoint]": f"https://{domain}/rest/",
        "auth[member_id]": "d897063e1ce7c5eb9f04b9751eef5915",
    }
    if token is not None:
        form["auth[application_token]"] = token
    return form


def stored(app):
    with app.app_context():
        return db.session.query(BitrixEvent).all()


def test_accepted_event_is_stored_without_the_token(app, configured):
    r = configured.post("/api/bitrix/webhook", data=event_form())
    assert r.status_code == 200
    events = stored(app)
    assert len(events) == 1
    e = events[0]
    # no handler is registered: the event is logged and finished in the same write
    assert (e.client_id, e.event, e.entity_type, e.entity_id, e.status) == (1, "ONCRMCONTACTADD", "CONTACT", "89", "done")
    assert e.payload["data"] == {"FIELDS": {"ID": "89"}}
    assert "application_token" not in e.payload["auth"]
    assert e.payload["auth"]["domain"] == "b24-test.bitrix24.com"
    assert r.get_json()["result"]["event_id"] == e.id


def test_wrong_token_is_401_and_stores_nothing(app, configured):
    r = configured.post("/api/bitrix/webhook", data=event_form(token="wrong"))
    assert r.status_code == 401
    assert "invalid application_token" in r.get_json()["error_description"]
    assert stored(app) == []


def test_missing_token_is_401(app, configured):
    r = configured.post("/api/bitrix/webhook", data=event_form(token=None))
    assert r.status_code == 401 and "invalid application_token" in r.get_json()["error_description"]
    assert stored(app) == []


def test_another_tenants_token_is_a_mismatch(app, configured):
    configured.post("/api/bitrix/clients/2/config",
                    json={"webhook_base": "https://other.bitrix24.com/rest/1/abcdef/", "outbound_token": "tok-c2-zzzzzz"})
    r = configured.post("/api/bitrix/webhook", data=event_form(token="tok-c2-zzzzzz"))
    assert r.status_code == 401
    r = configured.post("/api/bitrix/clients/1/webhook", data=event_form(token="tok-c2-zzzzzz"))
    assert r.status_code == 401
    assert stored(app) == []


def test_environment_token_for_unknown_domains(make_app):
    app = make_app(BITRIX_OUTBOUND_TOKEN="env-token-123")
    c = app.test_client()
    assert c.post("/api/bitrix/webhook", data=event_form(token="env-token-123", domain="unknown.bitrix24.com")).status_code == 200
    assert c.post("/api/bitrix/webhook", data=event_form(token="nope", domain="unknown.bitrix24.com")).status_code == 401
    events = stored(app)
    assert len(events) == 1 and events[0].client_id is None


def test_no_token_configured_anywhere_refuses(app):
    r = app.test_client().post("/api/bitrix/webhook", data=event_form(token="anything"))
    assert r.status_code == 401 and stored(app) == []


def test_per_client_url(app, configured):
    r = configured.post("/api/bitrix/clients/1/webhook", data=event_form())
    assert r.status_code == 200
    assert stored(app)[0].client_id == 1


def test_redelivery_is_acknowledged_once_stored(app, configured):
    first = configured.post("/api/bitrix/webhook", data=event_form())
    again = configured.post("/api/bitrix/webhook", data=event_form())
    assert again.status_code == 200 and again.get_json()["result"]["duplicate"] is True
    assert again.get_json()["result"]["event_id"] == first.get_json()["result"]["event_id"]
    assert len(stored(app)) == 1
    configured.post("/api/bitrix/webhook", data=event_form(ts="1724696256"))
    assert len(stored(app)) == 2


def test_json_event_bodies(app, configured):
    payload = {"event": "ONCRMDEALUPDATE", "data": {"FIELDS": {"ID": "3"}}, "ts": "5",
               "auth": {"domain": "b24-test.bitrix24.com", "application_token": "tok-c1-abcdef"}}
    assert configured.post("/api/bitrix/webhook", json=payload).status_code == 200
    assert stored(app)[0].entity_type == "DEAL"


def test_malformed_event_bodies_are_4xx(app, configured):
    for kwargs in ({"data": b""}, {"data": b"\xff\xfe", "content_type": "application/x-www-form-urlencoded"},
                   {"data": b"[1,2", "content_type": "application/json"},
                   {"data": {"data[FIELDS][ID]": "1", "auth[application_token]": "tok-c1-abcdef"}}):
        r = configured.post("/api/bitrix/webhook", **kwargs)
        assert 400 <= r.status_code < 500, kwargs
        assert r.is_json
    assert stored(app) == []


def test_config_domain_routes_events(make_app):
    app = make_app()
    c = app.test_client()
    c.post("/api/bitrix/clients/4/config", json={"webhook_base": PORTAL_BASE, "outbound_token": "t4-abcdefgh"})
    c.post("/api/bitrix/clients/5/config", json={"webhook_base": PORTAL_BASE, "outbound_token": "t5-abcdefgh"})
    assert c.post("/api/bitrix/webhook", data=event_form(token="t5-abcdefgh")).status_code == 200
    assert stored(app)[0].client_id == 5
