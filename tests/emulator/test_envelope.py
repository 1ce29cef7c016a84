"""Call format and request parsing, the response envelope, errors and the order of checks.

Sources: https://apidocs.bitrix24.com/settings/how-to-call-rest-api/general-principles.html,
https://apidocs.bitrix24.com/settings/how-to-call-rest-api/data-encoding.html,
https://apidocs.bitrix24.com/local-integrations/local-webhooks.html,
https://apidocs.bitrix24.com/api-reference/data-types.html#time, https://apidocs.bitrix24.com/error-codes.html and
https://apidocs.bitrix24.com/limits.html. Where a test names "the portal's source", it is the rest module of the
portal's PHP source: rest.php is modules/rest/classes/general/rest.php (envelope, headers, order of checks),
rest_util.php is modules/rest/classes/general/rest_util.php (request bodies, checkAuth) and apauth/auth.php is
modules/rest/lib/apauth/auth.php (webhook credentials).
"""

import json

from werkzeug.test import Client

from .conftest import BASE, T0, make_api


def test_success_envelope_key_order():
    """Success bodies have result, then next/total on lists, then time with its keys in order (the portal's
    source, rest.php; the time keys: https://apidocs.bitrix24.com/api-reference/data-types.html#time)."""
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


def test_operating_reset_at_appears_once_recorded():
    """operating_reset_at is present only when something has been recorded (https://apidocs.bitrix24.com/limits.html;
    the portal's source, rest.php)."""
    _, body = make_api()("profile")
    assert "operating_reset_at" not in body["time"] and body["time"]["operating"] == 0
    api = make_api(cost_per_call=1.0)
    _, body = api("profile")
    assert list(body["time"])[-2:] == ["operating_reset_at", "operating"]
    assert body["time"]["operating"] == 1.0  # this call's own cost is included
    assert body["time"]["processing"] == 1.0  # and it is the run time the call reports: what a portal charges
    assert body["time"]["operating_reset_at"] == int(T0 + 600)
    _, body = make_api(limits=False)("profile")
    assert "operating" not in body["time"]  # like an on-premise portal with the limiter off


def test_error_body_has_no_time(api):
    """Error bodies carry only error and error_description (the portal's source, rest.php)."""
    status, body = api("crm.contact.get", {"id": 999})
    assert status == 400
    assert body == {"error": "", "error_description": "Not found"}


def test_headers(api):
    """JSON content type, CORS header and the X-Bitrix-Rest-* timing headers; no limit headers (the portal's
    source, rest.php and rest_util.php)."""
    response = api.raw("profile")
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "X-Bitrix-Rest-Time" in response.headers
    assert not any("limit" in h.lower() for h in response.headers.keys())


def test_method_names_case_insensitive_and_json_suffix(api):
    """The server lower-cases method names (the portal's source, rest.php); the .json suffix is optional
    (https://apidocs.bitrix24.com/local-integrations/local-webhooks.html)."""
    assert api.ok("crm.contact.Add", {"fields": {"NAME": "A"}}) == 1
    assert api.ok("CRM.CONTACT.GET.json", {"id": 1})["NAME"] == "A"


def test_unknown_method_before_auth():
    """The order of checks in the portal's source (rest.php): an unknown method is 404 ERROR_METHOD_NOT_FOUND
    even with a wrong secret."""
    client = Client(make_api().emu)
    response = client.get("/rest/1/wrong/crm.nothing.get")
    assert response.status_code == 404
    assert response.json == {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}


def test_user_id_left_out_is_method_not_found(api):
    """/rest/{secret}/method answers ERROR_METHOD_NOT_FOUND (reported in the official Python SDK's repository,
    bitrix24/b24pysdk, pull request #3)."""
    response = api.client.get("/rest/demo/profile")
    assert response.status_code == 404
    assert response.json["error"] == "ERROR_METHOD_NOT_FOUND"


def test_wrong_secret_or_user_is_401(api):
    """Wrong webhook secret or unknown user -> 401 INVALID_CREDENTIALS (the portal's source, apauth/auth.php; method
    pages such as https://apidocs.bitrix24.com/api-reference/chats/im-chat-get.html show 401 too)."""
    for path in ("/rest/1/nope/profile", "/rest/2/demo/profile"):
        response = api.client.get(path)
        assert response.status_code == 401
        assert response.json == {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}


def test_auth_status_is_configurable():
    """The system-errors table at https://apidocs.bitrix24.com/error-codes.html says 403 for INVALID_CREDENTIALS
    (the portal's source and the method pages say 401); the emulator can answer that way."""
    api = make_api(auth_error_status=403)
    assert api.client.get("/rest/1/nope/profile").status_code == 403


def test_oauth_path_without_token(api):
    """/rest/method without any token -> 401 NO_AUTH_FOUND (the portal's source, rest_util.php checkAuth;
    https://apidocs.bitrix24.com/error-codes.html)."""
    response = api.client.get("/rest/profile")
    assert response.status_code == 401
    assert response.json["error"] == "NO_AUTH_FOUND"


def test_auth_checked_before_rate_limit():
    """A bad secret is 401 even when the bucket is empty, and does not use up the bucket (auth comes early in
    the order of checks of the portal's source, rest.php)."""
    api = make_api(burst=1)
    assert api.client.get("/rest/1/bad/profile").status_code == 401
    assert api.raw("profile").status_code == 200
    assert api.raw("profile").status_code == 503


def test_query_and_body_merge_body_wins(api):
    """GET parameters and POST parameters are merged; the body overrides the query (the portal's source,
    rest_util.php getRequestData)."""
    api.ok("crm.contact.add", {"fields": {"NAME": "A"}})
    api.ok("crm.contact.add", {"fields": {"NAME": "B"}})
    response = api.client.post(BASE + "crm.contact.get?id=1", data="id=2",
                               content_type="application/x-www-form-urlencoded")
    assert response.json["result"]["NAME"] == "B"
    response = api.client.get(BASE + "crm.contact.get?id=1")
    assert response.json["result"]["NAME"] == "A"


def test_form_body_nested(api):
    """urlencoded form bodies with PHP nested keys
    (https://apidocs.bitrix24.com/settings/how-to-call-rest-api/data-encoding.html)."""
    body = "fields[NAME]=Ann&fields[PHONE][0][VALUE]=%2B7%20999&fields[PHONE][0][VALUE_TYPE]=MOBILE"
    response = api.client.post(BASE + "crm.contact.add", data=body,
                               content_type="application/x-www-form-urlencoded")
    assert response.json["result"] == 1
    phone = api.emu.records["contact"][1]["PHONE"][0]
    assert (phone["VALUE"], phone["VALUE_TYPE"]) == ("+7 999", "MOBILE")


def test_multipart_body(api):
    """multipart/form-data bodies are read with the same key rules (the portal's source, rest_util.php)."""
    response = api.client.post(BASE + "crm.contact.add",
                               data={"fields[NAME]": "Multi", "fields[EMAIL][0][VALUE]": "m@x.io"})
    assert response.status_code == 200
    assert api.emu.records["contact"][1]["EMAIL"][0]["VALUE"] == "m@x.io"


def test_invalid_json_is_empty_params(api):
    """Invalid JSON is silently {} (so contact.add fails on the missing name, not on parsing) (the portal's
    source, rest_util.php getRequestData)."""
    response = api.client.post(BASE + "crm.contact.add", data="{not json",
                               content_type="application/json; charset=utf-8")
    assert response.status_code == 400
    assert "required" in response.json["error_description"]
    assert response.json["error"] == ""


def test_other_content_type_is_parse_str(api):
    """A non-form, non-JSON body is parse_str'd (the portal's source, rest_util.php getRequestData)."""
    response = api.client.post(BASE + "crm.contact.add", data="fields[NAME]=Plain", content_type="text/plain")
    assert response.json["result"] == 1


def test_injected_500():
    """fail_rate answers 500 INTERNAL_SERVER_ERROR (https://apidocs.bitrix24.com/error-codes.html) without
    running the method."""
    api = make_api(fail_rate=1.0, seed=3)
    status, body = api("crm.contact.add", {"fields": {"NAME": "x"}})
    assert status == 500 and body["error"] == "INTERNAL_SERVER_ERROR"
    assert api.emu.records["contact"] == {}
    assert api.emu.counters.failed == 1 and api.emu.counters.by_status[500] == 1


def test_counters(api):
    """Counters: totals, by HTTP status and by method name."""
    api.ok("profile")
    api("crm.contact.get", {"id": 5})
    api.client.get("/rest/1/demo/nothing.here")
    counters = api.emu.counters
    assert counters.requests == 3 and counters["requests"] == 3
    assert counters.by_status == {200: 1, 400: 1, 404: 1}
    assert counters.by_method["profile"] == 1 and counters.by_method["crm.contact.get"] == 1
    assert json.dumps(counters.as_dict())


def test_reset_clears_state(api):
    """reset() forgets records, counters and limiter state."""
    api.ok("crm.contact.add", {"fields": {"NAME": "x"}})
    api.emu.reset()
    assert api.emu.records["contact"] == {} and api.emu.counters.requests == 0
    assert api.ok("crm.contact.add", {"fields": {"NAME": "y"}}) == 1


def test_profile(api):
    """profile returns the webhook user's object."""
    profile = api.ok("profile")
    assert profile["ID"] == "1" and profile["ADMIN"] is True
    assert {"NAME", "LAST_NAME"} <= set(profile)


def test_latency():
    """latency_ms delays every answer."""
    import time

    api = make_api(latency_ms=50)
    started = time.perf_counter()
    api.ok("profile")
    assert time.perf_counter() - started >= 0.045
