"""Credentials a portal refuses: checked before a webhook is saved, and a saved one that keeps being
refused is suspended (circuit breaker) so it stops taking places in a bucket other tenants share."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PORTAL_BASE, PORTAL_SECRET, portal_url

REFUSED = {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}
PROFILE = {"result": {"ID": "1", "ADMIN": True, "NAME": "Ann", "LAST_NAME": "Admin"}}
OTHER_BASE = "https://b24-test.bitrix24.com/rest/7/0therS3cretAbc/"  # same portal, another webhook


def _calls(portal, method: str, base: str = PORTAL_BASE) -> int:
    return sum(1 for c in portal.calls if c.request.url.startswith(base + method))


@pytest.fixture
def checked(make_app):
    return make_app(BITRIX_VERIFY_CONFIG=True)


def test_a_new_webhook_is_tried_before_it_is_saved(checked, portal):
    portal.post(portal_url("profile"), json=PROFILE)
    c = checked.test_client()
    assert c.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE}).status_code == 201
    assert _calls(portal, "profile") == 1
    # The same webhook again (a token change): nothing new to try.
    assert c.post("/api/bitrix/clients/1/config", json={"outbound_token": "tok-c1-abcdef"}).status_code == 200
    assert _calls(portal, "profile") == 1


def test_a_refused_webhook_is_not_saved(checked, portal):
    portal.post(portal_url("profile"), status=401, json=REFUSED)
    c = checked.test_client()
    r = c.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE})
    body = r.get_json()
    assert r.status_code == 422 and body["error"] == "WEBHOOK_REJECTED", body
    assert body["bitrix24_error"] == "INVALID_CREDENTIALS" and body["field"] == "webhook_base"
    assert PORTAL_SECRET not in r.get_data(as_text=True)
    assert c.get("/api/bitrix/clients/1/config").get_json()["result"]["source"] != "database"
    assert _calls(portal, "profile") == 1  # a refusal is not retried


def test_an_unreachable_portal_says_how_to_save_anyway(checked, portal):
    portal.post(portal_url("profile"), body=requests.ConnectionError("connection refused"))
    c = checked.test_client()
    r = c.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE})
    assert r.status_code == 502 and r.get_json()["error"] == "WEBHOOK_NOT_VERIFIED"
    assert '"verify": false' in r.get_json()["error_description"]
    calls = len(portal.calls)
    saved = c.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE, "verify": False})
    assert saved.status_code == 201 and len(portal.calls) == calls  # stored unchecked, nothing sent


def test_a_busy_portal_is_429_with_retry_after(checked, portal):
    portal.post(portal_url("profile"), status=503, json={"error": "QUERY_LIMIT_EXCEEDED",
                                                         "error_description": "Too many requests"})
    r = checked.test_client().post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE})
    assert r.status_code == 429 and r.get_json()["error"] == "WEBHOOK_NOT_VERIFIED" and int(r.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("verify", ["yes", "false", None])
def test_verify_must_be_a_boolean(checked, verify):
    r = checked.test_client().post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE, "verify": verify})
    assert r.status_code == 400 and r.get_json()["error"] == "INVALID_CONFIG"


# ---------------------------------------------------------------------------------------------
# The breaker


def _metrics(client) -> dict:
    text = client.get("/api/bitrix/metrics").get_data(as_text=True)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_credentials_refused_again_and_again_are_suspended(make_app, portal):
    app = make_app(BITRIX_AUTH_FAILURES_TO_SUSPEND=3, BITRIX_AUTH_SUSPEND_SECONDS=300)
    c = app.test_client()
    c.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE})
    c.post("/api/bitrix/clients/2/config", json={"webhook_base": OTHER_BASE})
    portal.post(portal_url("crm.contact.get"), status=401, json=REFUSED)
    portal.post(OTHER_BASE + "crm.contact.get.json", json={"result": {"ID": "5"}})

    answers = [c.get("/api/bitrix/clients/1/contacts/5") for _ in range(5)]
    assert [r.status_code for r in answers] == [502] * 5
    assert all(r.get_json()["bitrix24_error"] == "INVALID_CREDENTIALS" for r in answers)
    assert [r.get_json().get("suspended", False) for r in answers] == [False, False, False, True, True]
    assert _calls(portal, "crm.contact.get") == 3  # the last two never reached the portal
    assert int(answers[-1].headers["Retry-After"]) == 300
    assert "suspended" in answers[-1].get_json()["error_description"]
    assert PORTAL_SECRET not in answers[-1].get_data(as_text=True)

    # Another tenant's webhook on the same portal is not held back.
    assert c.get("/api/bitrix/clients/2/contacts/5").status_code == 200

    debug = c.get("/api/bitrix/clients/1/config/debug").get_json()["result"]["suspended"]
    assert debug["state"] == "open" and debug["failures"] == 3 and debug["last_error"] == "INVALID_CREDENTIALS"
    assert c.get("/api/bitrix/clients/2/config/debug").get_json()["result"]["suspended"]["state"] == "closed"
    metrics = _metrics(c)
    assert metrics[("bitrix24_breaker_open", (("tenant", "1"),))] == 1
    assert metrics[("bitrix24_breaker_trips_total", (("tenant", "1"),))] == 1
    assert metrics[("bitrix24_breaker_refused_total", (("tenant", "1"),))] == 2


def test_after_the_cooldown_one_call_tries_again(make_app, portal):
    app = make_app(BITRIX_AUTH_FAILURES_TO_SUSPEND=2, BITRIX_AUTH_SUSPEND_SECONDS=60)
    c = app.test_client()
    c.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE})
    refused = portal.post(portal_url("crm.contact.get"), status=401, json=REFUSED)
    for _ in range(3):
        c.get("/api/bitrix/clients/1/contacts/5")
    assert refused.call_count == 2
    app.fake_time.now += 61
    assert c.get("/api/bitrix/clients/1/contacts/5").get_json().get("suspended") is None  # the probe went out
    assert refused.call_count == 3
    assert c.get("/api/bitrix/clients/1/contacts/5").get_json()["suspended"] is True  # refused: open again
    assert refused.call_count == 3

    app.fake_time.now += 61
    portal.replace(responses_post(), portal_url("crm.contact.get"), json={"result": {"ID": "5"}})
    assert c.get("/api/bitrix/clients/1/contacts/5").status_code == 200  # the webhook works again
    assert c.get("/api/bitrix/clients/1/contacts/5").status_code == 200
    assert c.get("/api/bitrix/clients/1/config/debug").get_json()["result"]["suspended"]["state"] == "closed"
    assert _metrics(c)[("bitrix24_breaker_open", (("tenant", "1"),))] == 0


def responses_post():
    import responses

    return responses.POST


def test_saving_the_config_again_lifts_the_suspension(make_app, portal):
    app = make_app(BITRIX_AUTH_FAILURES_TO_SUSPEND=1)
    c = app.test_client()
    c.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE})
    portal.post(portal_url("crm.contact.get"), status=401, json=REFUSED)
    c.get("/api/bitrix/clients/1/contacts/5")
    assert c.get("/api/bitrix/clients/1/contacts/5").get_json()["suspended"] is True
    c.post("/api/bitrix/clients/1/config", json={"webhook_base": OTHER_BASE})
    portal.post(OTHER_BASE + "crm.contact.get.json", json={"result": {"ID": "5"}})
    assert c.get("/api/bitrix/clients/1/contacts/5").status_code == 200


@pytest.mark.parametrize("code", ["insufficient_scope", "ACCESS_DENIED"])
def test_a_refusal_of_one_method_never_suspends_the_others(make_app, portal, code):
    app = make_app(BITRIX_AUTH_FAILURES_TO_SUSPEND=2)
    c = app.test_client()
    c.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE})
    scope = portal.post(portal_url("crm.contact.get"), status=401, json={"error": code, "error_description": "no"})
    for _ in range(5):
        assert c.get("/api/bitrix/clients/1/contacts/5").get_json().get("suspended") is None
    assert scope.call_count == 5


def test_a_suspended_answer_never_carries_a_cut_of_the_secret(make_app, portal):
    """A portal (or a proxy) that echoes the URL: the breaker keeps a cut of the description, which
    must be scrubbed before it is cut."""
    app = make_app(BITRIX_AUTH_FAILURES_TO_SUSPEND=1)
    c = app.test_client()
    c.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE})
    cut_at = 10  # the breaker keeps 200 characters: make them end 10 characters into the secret
    echo = "x" * (200 - len(" while calling ") - PORTAL_BASE.index(PORTAL_SECRET) - cut_at)
    echo += f" while calling {PORTAL_BASE}crm.contact.get.json"
    portal.post(portal_url("crm.contact.get"), status=401,
                json={"error": "INVALID_CREDENTIALS", "error_description": echo})
    answers = [c.get("/api/bitrix/clients/1/contacts/5") for _ in range(2)]
    assert answers[1].get_json()["suspended"] is True
    for r in answers:
        assert PORTAL_SECRET[:6] not in r.get_data(as_text=True)


def test_webhook_after_webhook_refused_at_save_stops_reaching_the_portal(make_app, portal):
    """Each refused check counts, per (client, portal host), whatever secret it names."""
    app = make_app(BITRIX_VERIFY_CONFIG=True, BITRIX_AUTH_FAILURES_TO_SUSPEND=5)
    c = app.test_client()
    for n in range(8):
        portal.post(f"https://b24-test.bitrix24.com/rest/1/guess{n:04d}xyz/profile.json", status=401, json=REFUSED)
    answers = [c.post("/api/bitrix/clients/1/config",
                      json={"webhook_base": f"https://b24-test.bitrix24.com/rest/1/guess{n:04d}xyz/"}) for n in range(8)]
    assert [r.status_code for r in answers] == [422] * 5 + [429] * 3
    assert answers[-1].get_json()["error"] == "WEBHOOK_CHECKS_SUSPENDED" and int(answers[-1].headers["Retry-After"]) >= 1
    assert len(portal.calls) == 5
    # Another client is not held back by this one's guesses.
    portal.post(portal_url("profile"), json=PROFILE)
    assert c.post("/api/bitrix/clients/2/config", json={"webhook_base": PORTAL_BASE}).status_code == 201


def test_a_config_fixed_through_another_process_clears_this_ones_breaker(make_app, portal):
    """Worker A learnt that client 1's old webhook is refused; the fix is saved through worker B (one
    database). A's next call on the new webhook works, and A's gauge says so."""
    a = make_app(BITRIX_AUTH_FAILURES_TO_SUSPEND=1, BITRIX_CONFIG_CACHE_SECONDS=0)
    b = make_app(BITRIX_CONFIG_CACHE_SECONDS=0)
    ca, cb = a.test_client(), b.test_client()
    ca.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE})
    portal.post(portal_url("crm.contact.get"), status=401, json=REFUSED)
    ca.get("/api/bitrix/clients/1/contacts/5")
    assert _metrics(ca)[("bitrix24_breaker_open", (("tenant", "1"),))] == 1
    cb.post("/api/bitrix/clients/1/config", json={"webhook_base": OTHER_BASE})
    portal.post(OTHER_BASE + "crm.contact.get.json", json={"result": {"ID": "5"}})
    assert ca.get("/api/bitrix/clients/1/contacts/5").status_code == 200
    assert _metrics(ca)[("bitrix24_breaker_open", (("tenant", "1"),))] == 0
