"""CRUD + list through app.test_client() with the portal mocked by ``responses``: the exact method
and decoded body the portal receives, and how each Bitrix24 answer maps to ours."""

from __future__ import annotations

import pytest
import requests
import responses

from tests.conftest import PORTAL_BASE, portal_url, refused, sent_pairs, sent_params

ENTITY_PREFIX = [("contacts", "crm.contact"), ("deals", "crm.deal"), ("leads", "crm.lead")]


@pytest.mark.parametrize("new_id", ["²", "٣", "1/../../x?y=1", -4, None])
def test_a_create_answered_with_an_odd_id_has_no_location(configured, portal, new_id):
    portal.post(portal_url("crm.contact.add"), json={"result": new_id})
    r = configured.post("/api/bitrix/clients/1/contacts", json={"fields": {"NAME": "Ada"}})
    assert r.status_code == 201 and r.get_json() == {"result": new_id} and "Location" not in r.headers


@pytest.mark.parametrize("entity,prefix", ENTITY_PREFIX)
def test_create_sends_fields_and_answers_201_with_location(configured, portal, entity, prefix):
    portal.post(portal_url(f"{prefix}.add"), json={"result": 46, "time": {}})
    fields = {"NAME": "Ada", "TITLE": "T", "PHONE": [{"VALUE": "+15551234567", "VALUE_TYPE": "WORK"}], "OPENED": True}
    r = configured.post(f"/api/bitrix/clients/1/{entity}", json={"fields": fields, "params": {"REGISTER_SONET_EVENT": "N"}})
    assert r.status_code == 201
    assert r.get_json() == {"result": 46}
    assert r.headers["Location"].endswith(f"/api/bitrix/clients/1/{entity}/46")
    call = portal.calls[0]
    assert call.request.url == portal_url(f"{prefix}.add")
    assert call.request.method == "POST"
    assert call.request.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    # (the test client sends JSON keys sorted; each pair arrives exactly once)
    assert sorted(sent_pairs(call)) == sorted([
        ("fields[NAME]", "Ada"),
        ("fields[TITLE]", "T"),
        ("fields[PHONE][0][VALUE]", "+15551234567"),
        ("fields[PHONE][0][VALUE_TYPE]", "WORK"),
        ("fields[OPENED]", "Y"),
        ("params[REGISTER_SONET_EVENT]", "N"),
    ])


def test_create_accepts_bare_fields(configured, portal):
    portal.post(portal_url("crm.deal.add"), json={"result": 7})
    r = configured.post("/api/bitrix/clients/1/deals", json={"TITLE": "New Deal", "OPPORTUNITY": 5000.00})
    assert r.status_code == 201
    assert sent_params(portal.calls[0]) == {"fields": {"TITLE": "New Deal", "OPPORTUNITY": "5000.0"}}


def test_get_returns_the_record(configured, portal):
    record = {"ID": "43", "NAME": "Ada", "EMAIL": [{"ID": "1", "VALUE": "ada@example.com", "VALUE_TYPE": "WORK"}]}
    portal.post(portal_url("crm.contact.get"), json={"result": record})
    r = configured.get("/api/bitrix/clients/1/contacts/43")
    assert r.status_code == 200 and r.get_json() == {"result": record}
    assert sent_pairs(portal.calls[0]) == [("id", "43")]


def test_update_accepts_the_readme_bare_stage_example(configured, portal):
    # The stage is checked against the deal's pipeline first (a stage outside it would be silently ignored).
    portal.post(portal_url("crm.deal.get"), json={"result": {"ID": "123", "CATEGORY_ID": "0", "STAGE_ID": "NEW"}})
    portal.post(portal_url("crm.status.list"), json={"result": [{"STATUS_ID": "NEW", "SORT": "10"},
                                                                {"STATUS_ID": "WON", "SORT": "60"}]})
    portal.post(portal_url("crm.deal.update"), json={"result": True})
    r = configured.patch("/api/bitrix/clients/1/deals/123", json={"STAGE_ID": "WON"})
    assert r.status_code == 200 and r.get_json() == {"result": True}
    assert sent_pairs(portal.calls[2]) == [("id", "123"), ("fields[STAGE_ID]", "WON")]


def test_delete(configured, portal):
    portal.post(portal_url("crm.lead.delete"), json={"result": True})
    r = configured.delete("/api/bitrix/clients/1/leads/9")
    assert r.status_code == 200 and r.get_json() == {"result": True}
    assert sent_pairs(portal.calls[0]) == [("id", "9")]


def test_list_translates_filter_select_order_start(configured, portal):
    portal.post(portal_url("crm.contact.list"), json={"result": [{"ID": "1"}], "total": 120, "next": 100})
    r = configured.get(
        "/api/bitrix/clients/1/contacts?filter[EMAIL]=ada@example.com&filter[>=DATE_CREATE]=2024-01-01"
        "&filter[@ID][]=1&filter[@ID][]=2&select=ID&select=NAME&select[]=EMAIL&ORDER_BY=-DATE_CREATE"
        "&order[ID]=asc&start=50"
    )
    assert r.status_code == 200
    assert r.get_json() == {"result": [{"ID": "1"}], "total": 120, "next": 100}
    assert sent_params(portal.calls[0]) == {
        "start": "50",
        "filter": {"EMAIL": "ada@example.com", ">=DATE_CREATE": "2024-01-01", "@ID": ["1", "2"]},
        "select": ["ID", "NAME", "EMAIL"],
        "order": {"DATE_CREATE": "DESC", "ID": "ASC"},
    }


def test_list_without_params_sends_none(configured, portal):
    portal.post(portal_url("crm.lead.list"), json={"result": [], "total": 0})
    r = configured.get("/api/bitrix/clients/1/leads")
    assert r.get_json() == {"result": [], "total": 0}
    assert sent_pairs(portal.calls[0]) == []


def test_environment_fallback_when_client_has_no_config(make_app, portal):
    app = make_app(BITRIX_WEBHOOK_BASE=PORTAL_BASE)
    portal.post(portal_url("crm.contact.get"), json={"result": {"ID": "5"}})
    r = app.test_client().get("/api/bitrix/clients/77/contacts/5")
    assert r.status_code == 200 and r.get_json() == {"result": {"ID": "5"}}


# --- error mapping (https://apidocs.bitrix24.com/error-codes.html; DESIGN.md "Public contract") ---


def test_not_found_legacy_empty_code_400(configured, portal):
    portal.post(portal_url("crm.contact.get"), status=400, json={"error": "", "error_description": "Not found"})
    r = configured.get("/api/bitrix/clients/1/contacts/999")
    assert r.status_code == 404
    assert r.get_json()["error"] == "NOT_FOUND"
    assert r.get_json()["error_description"] == "Not found"


def test_rate_limited_is_429_with_retry_after(configured, portal):
    portal.post(portal_url("crm.contact.list"), status=503,
                json={"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})
    r = configured.get("/api/bitrix/clients/1/contacts")
    assert r.status_code == 429
    assert r.get_json()["error"] == "QUERY_LIMIT_EXCEEDED"
    assert int(r.headers["Retry-After"]) >= 1


def test_operating_limit_is_429_with_retry_after(configured, portal):
    portal.post(portal_url("crm.contact.list"), status=429,
                json={"error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked due to operation time limit."})
    r = configured.get("/api/bitrix/clients/1/contacts")
    assert r.status_code == 429 and r.get_json()["error"] == "OPERATION_TIME_LIMIT"
    assert int(r.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("status,code", [(401, "INVALID_CREDENTIALS"), (401, "insufficient_scope"), (403, "ACCESS_DENIED"),
                                         (401, "expired_token")])
def test_portal_auth_failed_is_502(configured, portal, status, code):
    portal.post(portal_url("crm.deal.get"), status=status, json={"error": code, "error_description": "nope"})
    r = configured.get("/api/bitrix/clients/1/deals/1")
    assert r.status_code == 502
    body = r.get_json()
    assert body["error"] == "PORTAL_AUTH_FAILED" and body["bitrix24_error"] == code


def test_legacy_access_denied_with_empty_code_is_auth_failure(configured, portal):
    portal.post(portal_url("crm.deal.get"), status=400, json={"error": "", "error_description": "Access denied."})
    assert configured.get("/api/bitrix/clients/1/deals/1").status_code == 502


def test_transport_error_is_502(configured, portal):
    portal.post(portal_url("crm.contact.get"), body=refused())
    r = configured.get("/api/bitrix/clients/1/contacts/1")
    assert r.status_code == 502 and r.get_json()["error"] == "PORTAL_UNREACHABLE"


def test_timeout_is_504(configured, portal):
    portal.post(portal_url("crm.contact.get"), body=requests.exceptions.ReadTimeout("read timed out"))
    r = configured.get("/api/bitrix/clients/1/contacts/1")
    assert r.status_code == 504 and r.get_json()["error"] == "PORTAL_TIMEOUT"


def test_config_missing_is_400(client, portal):
    r = client.get("/api/bitrix/clients/5/contacts")
    assert r.status_code == 400
    body = r.get_json()
    assert body["error"] == "CONFIG_MISSING"
    assert "BITRIX_WEBHOOK_BASE" in body["error_description"] and "/config" in body["error_description"]
    assert len(portal.calls) == 0


def test_other_bitrix_4xx_passes_code_and_description(configured, portal):
    portal.post(portal_url("crm.contact.add"), status=400,
                json={"error": "ERROR_CORE", "error_description": "The field Work e-mail contains an invalid address"})
    r = configured.post("/api/bitrix/clients/1/contacts", json={"fields": {"NAME": "x", "EMAIL": [{"VALUE": "bad"}]}})
    assert r.status_code == 400
    assert r.get_json()["error"] == "ERROR_CORE"
    assert "invalid address" in r.get_json()["error_description"]


def test_portal_5xx_and_html_answers_are_502(configured, portal):
    portal.post(portal_url("crm.contact.get"), status=500, body="<html>oops</html>")
    r = configured.get("/api/bitrix/clients/1/contacts/1")
    assert r.status_code == 502 and r.get_json()["error"] == "PORTAL_ERROR"


def test_redirect_is_not_followed_and_is_reported(configured, portal):
    portal.post(portal_url("crm.contact.get"), status=302,
                headers={"Location": f"https://new-name.bitrix24.com/rest/1/{PORTAL_BASE.split('/')[-2]}/crm.contact.get.json"})
    r = configured.get("/api/bitrix/clients/1/contacts/1")
    assert r.status_code == 502
    body = r.get_json()
    assert body["error"] == "PORTAL_MOVED" and "new-name.bitrix24.com" in body["error_description"]
    assert PORTAL_BASE.split("/")[-2] not in r.get_data(as_text=True)
    assert len(portal.calls) == 1


def test_one_session_per_portal_is_reused(app, configured, portal):
    portal.post(portal_url("crm.contact.get"), json={"result": {"ID": "1"}})
    configured.get("/api/bitrix/clients/1/contacts/1")
    configured.get("/api/bitrix/clients/1/contacts/1")
    pool = app.extensions["bitrix24"].portals
    assert list(pool._clients) == ["https://b24-test.bitrix24.com"]


def test_bx_call_raises_typed_errors_outside_requests(app, portal):
    from flask_bitrix24.services.bitrix24_service import NotFound, bx_call
    from flask_bitrix24.services.client_config import save_config

    portal.post(portal_url("crm.deal.get"), status=400, json={"error": "", "error_description": "Not found"})
    with app.app_context():
        save_config(3, {"webhook_base": PORTAL_BASE})
        with pytest.raises(NotFound) as info:
            bx_call("crm.deal.get", {"id": 5}, client_id=3)
    assert info.value.code == "NOT_FOUND" and info.value.http_status == 400 and info.value.method == "crm.deal.get"
    assert PORTAL_BASE.split("/")[-2] not in repr(info.value) + str(info.value)


def test_bx_call_refuses_method_names_that_would_change_the_url(app):
    from flask_bitrix24.services.bitrix24_service import BadInput, bx_call

    with app.app_context():
        for bad in ("../profile", "crm.contact.get?x=1", "a/b", "", "crm..get"):
            with pytest.raises(BadInput):
                bx_call(bad)


def test_uses_responses_for_every_call(configured):
    # Nothing is registered: a real network call would be refused by `responses`, not sent.
    with responses.RequestsMock() as mock:
        r = configured.get("/api/bitrix/clients/1/contacts/1")
        assert mock.calls and all(c.request.url == portal_url("crm.contact.get") for c in mock.calls)
    assert r.status_code == 502
