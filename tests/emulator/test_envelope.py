"""§1 call format and request parsing, §2 the response envelope, §3 errors and the order of checks."""

import json

from werkzeug.test import Client

from .conftest import BASE, T0, make_api


def test_success_envelope_key_order_section2():
    """§2: success bodies have result, then next/total on lists, then time with its keys in order."""
    api = make_api(burst=1000)
    for i in range(51):
        api.ok("crm.contact.add", {"fields": {"NAME": f"n{i}"}})
    status, body = api("crm.contact.list", {"select": ["ID"]})
    assert status == 200
    assert list(body) == ["result", "next", "total", "time"]
    assert body["next"] == 50 and body["total"] == 51
    assert list(body["time"]) == ["start", "finish", "duration", "processing", "date_start", "date_finish",
                                  "operating"]
    assert body["time"]["start"] == T0
    assert body["time"]["date_start"] == "2026-11-27T11:00:00+03:00"


def test_operating_reset_at_appears_once_recorded_section2():
    """§2/§4: operating_reset_at is present only when something has been recorded."""
    _, body = make_api()("profile")
    assert "operating_reset_at" not in body["time"] and body["time"]["operating"] == 0
    api = make_api(cost_per_call=1.0)
    _, body = api("profile")
    assert list(body["time"])[-2:] == ["operating_reset_at", "operating"]
    assert body["time"]["operating"] == 1.0  # this call's own cost is included
    assert body["time"]["operating_reset_at"] == int(T0 + 600)
    _, body = make_api(limits=False)("profile")
    assert "operating" not in body["time"]  # like an on-premise portal with the limiter off


def test_error_body_has_no_time_section2(api):
    """§2: error bodies carry only error and error_description."""
    status, body = api("crm.contact.get", {"id": 999})
    assert status == 400
    assert body == {"error": "", "error_description": "Not found"}


def test_headers_section2(api):
    """§2: JSON content type, CORS header and the X-Bitrix-Rest-* timing headers; no limit headers."""
    response = api.raw("profile")
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "X-Bitrix-Rest-Time" in response.headers
    assert not any("limit" in h.lower() for h in response.headers.keys())


def test_method_names_case_insensitive_and_json_suffix_section1(api):
    """§1: the server lower-cases method names; the .json suffix is optional."""
    assert api.ok("crm.contact.Add", {"fields": {"NAME": "A"}}) == 1
    assert api.ok("CRM.CONTACT.GET.json", {"id": 1})["NAME"] == "A"


def test_unknown_method_before_auth_section3():
    """§3 order of checks: an unknown method is 404 ERROR_METHOD_NOT_FOUND even with a wrong secret."""
    client = Client(make_api().emu)
    response = client.get("/rest/1/wrong/crm.nothing.get")
    assert response.status_code == 404
    assert response.json == {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}


def test_user_id_left_out_is_method_not_found_section1(api):
    """§1: /rest/{secret}/method answers ERROR_METHOD_NOT_FOUND."""
    response = api.client.get("/rest/demo/profile")
    assert response.status_code == 404
    assert response.json["error"] == "ERROR_METHOD_NOT_FOUND"


def test_wrong_secret_or_user_is_401_section3(api):
    """§3: wrong webhook secret or unknown user -> 401 INVALID_CREDENTIALS."""
    for path in ("/rest/1/nope/profile", "/rest/2/demo/profile"):
        response = api.client.get(path)
        assert response.status_code == 401
        assert response.json == {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}


def test_auth_status_is_configurable_section11():
    """§11: DOCS say 403 for INVALID_CREDENTIALS; the emulator can answer that way."""
    api = make_api(auth_error_status=403)
    assert api.client.get("/rest/1/nope/profile").status_code == 403


def test_oauth_path_without_token_section3(api):
    """§3: /rest/method without any token -> 401 NO_AUTH_FOUND."""
    response = api.client.get("/rest/profile")
    assert response.status_code == 401
    assert response.json["error"] == "NO_AUTH_FOUND"


def test_auth_checked_before_rate_limit_section3():
    """§3: a bad secret is 401 even when the bucket is empty, and does not use up the bucket."""
    api = make_api(burst=1)
    assert api.client.get("/rest/1/bad/profile").status_code == 401
    assert api.raw("profile").status_code == 200
    assert api.raw("profile").status_code == 503


def test_query_and_body_merge_body_wins_section1(api):
    """§1: GET parameters and POST parameters are merged; the body overrides the query."""
    api.ok("crm.contact.add", {"fields": {"NAME": "A"}})
    api.ok("crm.contact.add", {"fields": {"NAME": "B"}})
    response = api.client.post(BASE + "crm.contact.get?id=1", data="id=2",
                               content_type="application/x-www-form-urlencoded")
    assert response.json["result"]["NAME"] == "B"
    response = api.client.get(BASE + "crm.contact.get?id=1")
    assert response.json["result"]["NAME"] == "A"


def test_form_body_nested_section1(api):
    """§1: urlencoded form bodies with PHP nested keys."""
    body = "fields[NAME]=Ann&fields[PHONE][0][VALUE]=%2B7%20999&fields[PHONE][0][VALUE_TYPE]=MOBILE"
    response = api.client.post(BASE + "crm.contact.add", data=body,
                               content_type="application/x-www-form-urlencoded")
    assert response.json["result"] == 1
    phone = api.emu.records["contact"][1]["PHONE"][0]
    assert (phone["VALUE"], phone["VALUE_TYPE"]) == ("+7 999", "MOBILE")


def test_multipart_body_section1(api):
    """§1: multipart/form-data bodies are read with the same key rules."""
    response = api.client.post(BASE + "crm.contact.add",
                               data={"fields[NAME]": "Multi", "fields[EMAIL][0][VALUE]": "m@x.io"})
    assert response.status_code == 200
    assert api.emu.records["contact"][1]["EMAIL"][0]["VALUE"] == "m@x.io"


def test_invalid_json_is_empty_params_section1(api):
    """§1: invalid JSON is silently {} (so contact.add fails on the missing name, not on parsing)."""
    response = api.client.post(BASE + "crm.contact.add", data="{not json",
                               content_type="application/json; charset=utf-8")
    assert response.status_code == 400
    assert "required" in response.json["error_description"]
    assert response.json["error"] == ""


def test_other_content_type_is_parse_str_section1(api):
    """§1: a non-form, non-JSON body is parse_str'd."""
    response = api.client.post(BASE + "crm.contact.add", data="fields[NAME]=Plain", content_type="text/plain")
    assert response.json["result"] == 1


def test_injected_500_section3():
    """§3: fail_rate answers 500 INTERNAL_SERVER_ERROR without running the method."""
    api = make_api(fail_rate=1.0, seed=3)
    status, body = api("crm.contact.add", {"fields": {"NAME": "x"}})
    assert status == 500 and body["error"] == "INTERNAL_SERVER_ERROR"
    assert api.emu.records["contact"] == {}
    assert api.emu.counters.failed == 1 and api.emu.counters.by_status[500] == 1


def test_counters_section3(api):
    """Counters: totals, by HTTP status and by method name."""
    api.ok("profile")
    api("crm.contact.get", {"id": 5})
    api.client.get("/rest/1/demo/nothing.here")
    counters = api.emu.counters
    assert counters.requests == 3 and counters["requests"] == 3
    assert counters.by_status == {200: 1, 400: 1, 404: 1}
    assert counters.by_method["profile"] == 1 and counters.by_method["crm.contact.get"] == 1
    assert json.dumps(counters.as_dict())


def test_reset_clears_state_section4(api):
    """reset() forgets records, counters and limiter state."""
    api.ok("crm.contact.add", {"fields": {"NAME": "x"}})
    api.emu.reset()
    assert api.emu.records["contact"] == {} and api.emu.counters.requests == 0
    assert api.ok("crm.contact.add", {"fields": {"NAME": "y"}}) == 1


def test_profile_section2(api):
    """profile returns the webhook user's object."""
    profile = api.ok("profile")
    assert profile["ID"] == "1" and profile["ADMIN"] is True
    assert {"NAME", "LAST_NAME"} <= set(profile)


def test_latency_section4():
    """latency_ms delays every answer."""
    import time

    api = make_api(latency_ms=50)
    started = time.perf_counter()
    api.ok("profile")
    assert time.perf_counter() - started >= 0.045
