"""Every endpoint of our API against the emulator over real HTTP, events included."""

from __future__ import annotations

import time

import pytest
from flask_bitrix24.extensions import db
from flask_bitrix24.models.standalone import BitrixEvent

SAMPLES = {
    "contacts": ("contact", {"NAME": "Ada", "LAST_NAME": "Lovelace", "EMAIL": [{"VALUE": "ada@example.com", "VALUE_TYPE": "WORK"}]},
                 {"NAME": "Augusta"}),
    "deals": ("deal", {"TITLE": "Big deal", "OPPORTUNITY": 5000.5, "CURRENCY_ID": "USD"}, {"STAGE_ID": "WON"}),
    "leads": ("lead", {"TITLE": "Warm lead", "NAME": "Grace", "SOURCE_ID": "WEB"}, {"STATUS_ID": "IN_PROCESS"}),
}


def wait_for(predicate, timeout=30.0):  # returns as soon as it holds; generous for a loaded machine
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def stored_events(app):
    with app.app_context():
        return [(e.client_id, e.event, e.entity_id) for e in db.session.query(BitrixEvent).order_by(BitrixEvent.id)]


@pytest.mark.parametrize("entity", list(SAMPLES))
def test_crud_roundtrip(stack, entity):
    kind, fields, changes = SAMPLES[entity]
    api, http = stack.api, stack.http

    r = http.post(f"{api}/clients/1/{entity}", json={"fields": fields})
    assert r.status_code == 201, r.text
    new_id = r.json()["result"]
    assert isinstance(new_id, int)
    assert r.headers["Location"].endswith(f"/api/bitrix/clients/1/{entity}/{new_id}")
    assert new_id in stack.emulator.records[kind]

    record = http.get(f"{api}/clients/1/{entity}/{new_id}").json()["result"]
    assert record["ID"] == str(new_id)
    for key, value in fields.items():
        if key != "EMAIL":
            assert str(record[key]).startswith(str(value)), (key, record[key])

    listed = http.get(f"{api}/clients/1/{entity}", params={"filter[ID]": new_id, "select[]": ["ID"]}).json()
    assert [row["ID"] for row in listed["result"]] == [str(new_id)] and listed["total"] == 1

    assert http.patch(f"{api}/clients/1/{entity}/{new_id}", json=changes).json() == {"result": True}
    record = http.get(f"{api}/clients/1/{entity}/{new_id}").json()["result"]
    assert all(record[k] == v for k, v in changes.items())

    assert http.delete(f"{api}/clients/1/{entity}/{new_id}").json() == {"result": True}
    gone = http.get(f"{api}/clients/1/{entity}/{new_id}")
    assert gone.status_code == 404 and gone.json()["error"] == "NOT_FOUND"
    assert new_id not in stack.emulator.records[kind]

    # the portal told us about each change, and every event was verified and stored for client 1
    event = f"ONCRM{kind.upper()}"
    expected = [(1, event + "ADD", str(new_id)), (1, event + "UPDATE", str(new_id)), (1, event + "DELETE", str(new_id))]
    assert wait_for(lambda: stored_events(stack.app) == expected), stored_events(stack.app)


def test_contact_example_from_the_readme_keeps_multifields(stack):
    r = stack.http.post(f"{stack.api}/clients/1/contacts", json={"fields": {
        "NAME": "Ada", "LAST_NAME": "Lovelace",
        "PHONE": [{"VALUE": "+15551234567", "VALUE_TYPE": "WORK"}],
        "EMAIL": [{"VALUE": "ada@example.com", "VALUE_TYPE": "WORK"}]}})
    cid = r.json()["result"]
    rows = stack.http.get(f"{stack.api}/clients/1/contacts",
                          params={"filter[EMAIL]": "ada@example.com", "select": ["ID", "NAME", "EMAIL", "PHONE"]}).json()["result"]
    assert len(rows) == 1 and rows[0]["ID"] == str(cid)
    assert [p["VALUE"] for p in rows[0]["PHONE"]] == ["+15551234567"]
    # update merges multi-fields: a new phone is added, the old one kept
    # (https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-update.html)
    stack.http.patch(f"{stack.api}/clients/1/contacts/{cid}", json={"fields": {"PHONE": [{"VALUE": "+442071234567", "VALUE_TYPE": "MOBILE"}]}})
    phones = stack.http.get(f"{stack.api}/clients/1/contacts/{cid}").json()["result"]["PHONE"]
    assert sorted(p["VALUE"] for p in phones) == ["+15551234567", "+442071234567"]


def test_list_paging_filter_order_select(stack):
    for i in range(120):
        r = stack.http.post(f"{stack.api}/clients/1/deals", json={"TITLE": f"Deal {i:03}", "OPPORTUNITY": i * 100})
        assert r.status_code == 201
    first = stack.http.get(f"{stack.api}/clients/1/deals", params={"select": ["ID", "TITLE"], "order[ID]": "ASC"}).json()
    assert first["total"] == 120 and first["next"] == 50 and len(first["result"]) == 50
    last = stack.http.get(f"{stack.api}/clients/1/deals", params={"select": ["ID"], "order[ID]": "ASC", "start": 100}).json()
    assert len(last["result"]) == 20 and "next" not in last
    big = stack.http.get(f"{stack.api}/clients/1/deals?filter[>=OPPORTUNITY]=11000&ORDER_BY=-OPPORTUNITY&select=ID&select=TITLE").json()
    assert [row["TITLE"] for row in big["result"]] == [f"Deal {i:03}" for i in (119, 118, 117, 116, 115, 114, 113, 112, 111, 110)]
    assert set(big["result"][0]) == {"ID", "TITLE"}


def test_config_debug_check_against_the_portal(stack):
    body = stack.http.get(f"{stack.api}/clients/1/config/debug", params={"check": 1}).json()["result"]
    assert body["source"] == "database" and body["portal_domain"] == f"127.0.0.1:{stack.emulator_server.port}"
    assert body["check"]["ok"] is True and body["check"]["user"]["ID"] == "1"
    assert stack.emulator.secret not in str(body)


def test_wrong_secret_is_refused_at_save_and_portal_auth_failed_after(stack):
    wrong = stack.emulator_server.base.replace("/demo/", "/wrongsecret/")
    saved = stack.http.post(f"{stack.api}/clients/2/config", json={"webhook_base": wrong})
    assert saved.status_code == 422, saved.text
    assert saved.json()["error"] == "WEBHOOK_REJECTED" and saved.json()["bitrix24_error"] == "INVALID_CREDENTIALS"
    assert "wrongsecret" not in saved.text
    assert stack.http.get(f"{stack.api}/clients/2/config").json()["result"]["source"] != "database"  # nothing saved
    # Saved unchecked (set up offline), the same secret fails each call instead.
    assert stack.http.post(f"{stack.api}/clients/2/config", json={"webhook_base": wrong, "verify": False}).status_code == 201
    r = stack.http.get(f"{stack.api}/clients/2/contacts")
    assert r.status_code == 502
    assert r.json()["error"] == "PORTAL_AUTH_FAILED" and r.json()["bitrix24_error"] == "INVALID_CREDENTIALS"
    check = stack.http.get(f"{stack.api}/clients/2/config/debug?check=1").json()["result"]["check"]
    assert check["ok"] is False and check["error"] == "INVALID_CREDENTIALS"
    # Refused again and again (BITRIX_AUTH_FAILURES_TO_SUSPEND, 5): later calls never reach the portal,
    # whose bucket client 1 on the same portal shares, and client 1 is served as before.
    stack.emulator.reset_counters()
    answers = [stack.http.get(f"{stack.api}/clients/2/contacts").json() for _ in range(6)]
    assert stack.emulator.counters.requests == 3  # 2 + the check above made 5
    assert [a.get("suspended", False) for a in answers] == [False] * 3 + [True] * 3
    debug = stack.http.get(f"{stack.api}/clients/2/config/debug").json()["result"]["suspended"]
    assert debug["state"] == "open" and debug["failures"] == 5
    assert stack.http.get(f"{stack.api}/clients/1/contacts").status_code == 200


def test_portal_down_is_portal_unreachable(stack):
    stack.app.extensions["bitrix24"].caller.policy = type(stack.app.extensions["bitrix24"].caller.policy)(max_wait=0.5)
    stack.emulator_server.stop()
    r = stack.http.get(f"{stack.api}/clients/1/contacts/1")
    assert r.status_code == 502 and r.json()["error"] == "PORTAL_UNREACHABLE"


def test_rate_limit_surfaces_as_429_with_retry_after(make_stack):
    # Someone else spent the portal's bucket: our pacing did not know, the portal says 503.
    s = make_stack(app_config={"BITRIX_MAX_WAIT": 1.0, "BITRIX_RATE_BURST": 50, "BITRIX_RATE_DRAIN": 2.0},
                   limits=True, burst=4, rate=0.01)
    s.configure()  # its check takes one place of the 4
    statuses = [s.http.get(f"{s.api}/clients/1/contacts").status_code for _ in range(4)]
    assert statuses[:3] == [200, 200, 200] and statuses[3] == 429
    r = s.http.get(f"{s.api}/clients/1/contacts")
    assert r.json()["error"] == "QUERY_LIMIT_EXCEEDED" and int(r.headers["Retry-After"]) >= 1
    assert s.emulator.counters.rate_limited >= 2


def test_operating_limit_surfaces_as_429(make_stack):
    s = make_stack(limits=True, burst=1000, rate=1000, operating_limit=10, cost_per_call=6)
    s.configure()
    assert s.http.get(f"{s.api}/clients/1/leads").status_code == 200
    assert s.http.get(f"{s.api}/clients/1/leads").status_code == 200  # pushes the total over: still completes
    r = s.http.get(f"{s.api}/clients/1/leads")
    assert r.status_code == 429 and r.json()["error"] == "OPERATION_TIME_LIMIT"
    assert s.http.get(f"{s.api}/clients/1/contacts").status_code == 200  # other methods are not blocked


def test_events_with_a_wrong_token_are_refused_and_not_stored(make_stack):
    s = make_stack(application_token="the-portals-token")
    s.configure(token="a-different-token")
    s.http.post(f"{s.api}/clients/1/contacts", json={"NAME": "Eve"})
    assert s.emulator.wait_events(30)
    assert [e["status"] for e in s.emulator.events_sent] == [401]
    assert stored_events(s.app) == []


def test_a_webhook_without_the_crm_scope_is_insufficient_scope_and_never_suspended(make_stack):
    """The webhook works (profile needs no scope, so the save's check passes) but lacks `crm`: every
    CRM call says so, and, being about the scope rather than the credentials, none is suspended."""
    s = make_stack(scopes="user")
    s.configure()
    answers = [s.http.get(f"{s.api}/clients/1/contacts").json() for _ in range(7)]
    assert all(a["error"] == "PORTAL_AUTH_FAILED" and a["bitrix24_error"] == "insufficient_scope" for a in answers)
    assert not any(a.get("suspended") for a in answers)
    assert s.emulator.counters.by_method["crm.contact.list"] == 7
