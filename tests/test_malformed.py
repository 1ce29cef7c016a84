"""Bad input is always a 4xx JSON error that says what to fix, never a 500."""

from __future__ import annotations

import io

import pytest

BAD_REQUESTS = [
    # (method, path, kwargs, status, error)
    ("POST", "/api/bitrix/clients/1/contacts", {"data": "{not json", "content_type": "application/json"}, 400, "INVALID_JSON"),
    ("POST", "/api/bitrix/clients/1/contacts", {"data": "", "content_type": "application/json"}, 400, "INVALID_BODY"),
    ("POST", "/api/bitrix/clients/1/contacts", {"json": [1, 2]}, 400, "INVALID_BODY"),
    ("POST", "/api/bitrix/clients/1/contacts", {"json": "text"}, 400, "INVALID_BODY"),
    ("POST", "/api/bitrix/clients/1/contacts", {"json": {"fields": "NAME=Ada"}}, 400, "INVALID_FIELDS"),
    ("POST", "/api/bitrix/clients/1/contacts", {"json": {"fields": [1]}}, 400, "INVALID_FIELDS"),
    ("POST", "/api/bitrix/clients/1/contacts", {"json": {"fields": {}}}, 400, "INVALID_FIELDS"),
    ("POST", "/api/bitrix/clients/1/contacts", {"json": {}}, 400, "INVALID_FIELDS"),
    ("POST", "/api/bitrix/clients/1/contacts", {"json": {"fields": {"NAME": "a"}, "params": 3}}, 400, "INVALID_PARAMS"),
    ("POST", "/api/bitrix/clients/1/contacts", {"json": {"fields": {"NAME": "a"}, "NAME": "b"}}, 400, "INVALID_BODY"),
    ("POST", "/api/bitrix/clients/1/contacts", {"json": {"fields": {"name": "a"}}}, 400, "INVALID_FIELD_NAME"),
    ("POST", "/api/bitrix/clients/1/contacts", {"json": {"fields": {"NAME[x]": "a"}}}, 400, "INVALID_FIELD_NAME"),
    ("PATCH", "/api/bitrix/clients/1/deals/5", {"json": {"fields": None}}, 400, "INVALID_FIELDS"),
    ("GET", "/api/bitrix/clients/abc/contacts", {}, 400, "INVALID_ID"),
    ("GET", "/api/bitrix/clients/-1/contacts", {}, 400, "INVALID_ID"),
    ("GET", "/api/bitrix/clients/0/contacts", {}, 400, "INVALID_ID"),
    ("GET", "/api/bitrix/clients/1.5/contacts", {}, 400, "INVALID_ID"),
    ("GET", "/api/bitrix/clients/99999999999999999999999/contacts", {}, 400, "INVALID_ID"),
    ("GET", "/api/bitrix/clients/1/contacts/abc", {}, 400, "INVALID_ID"),
    ("GET", "/api/bitrix/clients/1/contacts/-5", {}, 400, "INVALID_ID"),
    ("DELETE", "/api/bitrix/clients/1/deals/0", {}, 400, "INVALID_ID"),
    ("GET", "/api/bitrix/clients/1/contacts/1x", {}, 400, "INVALID_ID"),
    ("GET", "/api/bitrix/clients/1/items/abc", {}, 400, "INVALID_ID"),
    ("PATCH", "/api/bitrix/clients/1/items/128/x", {"json": {"fields": {"title": "a"}}}, 400, "INVALID_ID"),
    ("POST", "/api/bitrix/clients/1/events/abc/replay", {"json": {}}, 400, "INVALID_ID"),
    ("POST", "/api/bitrix/clients/abc/webhook", {"data": {"event": "ONCRMDEALADD"}}, 400, "INVALID_ID"),
    ("GET", "/api/bitrix/clients/1/widgets", {}, 404, "UNKNOWN_ENTITY"),
    ("POST", "/api/bitrix/clients/1/widgets", {"json": {"fields": {"A": 1}}}, 404, "UNKNOWN_ENTITY"),
    ("GET", "/api/bitrix/clients/1/contacts?start=abc", {}, 400, "INVALID_START"),
    ("GET", "/api/bitrix/clients/1/contacts?start=-7", {}, 400, "INVALID_START"),
    ("GET", "/api/bitrix/clients/1/contacts?filter[email]=x", {}, 400, "INVALID_FILTER"),
    ("GET", "/api/bitrix/clients/1/contacts?filter[%3E%3Demail]=x", {}, 400, "INVALID_FILTER"),
    ("GET", "/api/bitrix/clients/1/contacts?order[ID]=UP", {}, 400, "INVALID_ORDER"),
    ("GET", "/api/bitrix/clients/1/contacts?ORDER_BY=na;me", {}, 400, "INVALID_ORDER"),
    ("GET", "/api/bitrix/clients/1/contacts?select=na%20me", {}, 400, "INVALID_SELECT"),
    ("GET", "/api/bitrix/clients/1/contacts?limit=5", {}, 400, "UNKNOWN_PARAMETER"),
    ("POST", "/api/bitrix/clients/1/config", {"json": {"webhook_base": ["x"]}}, 400, "INVALID_CONFIG"),
    ("POST", "/api/bitrix/clients/1/config", {"data": "webhook_base=x"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
    # what a cross-site form can send (a "simple" request, no CORS preflight): refused, JSON or not
    ("POST", "/api/bitrix/clients/1/contacts", {"data": '{"fields": {"NAME": "a"}}', "content_type": "text/plain"},
     415, "UNSUPPORTED_MEDIA_TYPE"),
    ("POST", "/api/bitrix/clients/1/contacts", {"data": {"fields": "x"}}, 415, "UNSUPPORTED_MEDIA_TYPE"),
    ("POST", "/api/bitrix/clients/1/config", {"data": "webhook_base=x", "content_type": "application/json"}, 400,
     "INVALID_JSON"),
    ("POST", "/api/bitrix/clients/x/config", {"json": {"webhook_base": "x"}}, 400, "INVALID_ID"),
    ("PUT", "/api/bitrix/clients/1/contacts/1", {"json": {"NAME": "a"}}, 405, "METHOD_NOT_ALLOWED"),
    ("GET", "/api/bitrix/nothing/here", {}, 404, "NOT_FOUND"),
]


@pytest.mark.parametrize("method,path,kwargs,status,error", BAD_REQUESTS)
def test_bad_input_is_a_4xx_json_error(configured, portal, method, path, kwargs, status, error):
    r = configured.open(path, method=method, **kwargs)
    assert r.status_code == status, r.get_data(as_text=True)
    body = r.get_json()
    assert body["error"] == error
    assert body["error_description"]
    assert not portal.calls  # refused before anything reached Bitrix24


def test_oversized_body_is_413_json(make_app):
    app = make_app(BITRIX_MAX_BODY_BYTES=1000)
    r = app.test_client().post("/api/bitrix/clients/1/contacts", json={"fields": {"NAME": "x" * 5000}})
    assert r.status_code == 413 and r.get_json()["error"] == "BODY_TOO_LARGE"


def test_encoded_filter_operators_work_too(configured, portal):
    from tests.conftest import portal_url, sent_params

    portal.post(portal_url("crm.deal.list"), json={"result": [], "total": 0})
    r = configured.get("/api/bitrix/clients/1/deals?filter%5B%3E%3DOPPORTUNITY%5D=1000&filter[!STAGE_ID]=LOSE")
    assert r.status_code == 200
    assert sent_params(portal.calls[0]) == {"filter": {">=OPPORTUNITY": "1000", "!STAGE_ID": "LOSE"}}


ODD_BODIES = [
    # (method, path, raw JSON body, expected status)
    ("POST", "/api/bitrix/clients/1/contacts", '{"fields": {"NAME": NaN}}', 400),
    ("POST", "/api/bitrix/clients/1/contacts", '{"fields": {"OPPORTUNITY": 1e400}}', 400),
    ("POST", "/api/bitrix/clients/1/contacts", '{"fields": {"NAME": "\\ud800"}}', 400),
    ("POST", "/api/bitrix/clients/1/contacts", '{"fields": {"ADDRESS": {"": 1}}}', 400),
    ("POST", "/api/bitrix/clients/1/contacts", '{"fields": {"ADDRESS": {"a[b]": 1}}}', 400),
    ("POST", "/api/bitrix/clients/1/contacts", '{"fields": {"X": ' + "[" * 5000 + "]" * 5000 + "}}", 400),
    ("PATCH", "/api/bitrix/clients/1/deals/5", '{"fields": {"TITLE": "\\udfff"}}', 400),
    ("POST", "/api/bitrix/clients/1/contacts/batch", '{"items": [{"fields": {"NAME": NaN}}]}', 400),
    ("POST", "/api/bitrix/clients/1/config", '{"webhook_base": "https://b24-test.bitrix24.com/rest/1/abc/", "plan": ["x"]}', 400),
    ("POST", "/api/bitrix/clients/1/config", '{"webhook_base": "https://[zz/rest/1/abc/"}', 400),
    ("POST", "/api/bitrix/clients/2147483648/config", '{"webhook_base": "https://b24-test.bitrix24.com/rest/1/abc/"}', 400),
    ("POST", "/api/bitrix/webhook", '{"event": "X", "auth": {"application_token": "\\ud800"}}', 400),
    ("POST", "/api/bitrix/webhook", "[" * 5000 + "]" * 5000, 400),
]


@pytest.mark.parametrize("method,path,body,status", ODD_BODIES)
def test_odd_json_never_500(configured, portal, method, path, body, status):
    r = configured.open(path, method=method, data=body, content_type="application/json")
    assert r.status_code == status, r.get_data(as_text=True)[:300]
    assert r.is_json and r.get_json()["error"]
    assert not portal.calls


@pytest.mark.parametrize("query", ["all=1&filter[>ID]=abc", "all=1&filter[>ID][]=1", "all=1&filter[>=ID]=1.5"])
def test_list_all_with_a_bad_id_filter_is_400(configured, portal, query):
    r = configured.get(f"/api/bitrix/clients/1/contacts?{query}")
    assert r.status_code == 400 and r.get_json()["error"] == "INVALID_FILTER"


@pytest.mark.parametrize("path", ["/api/bitrix//clients/1/contacts", "/api/bitrix/clients/1//contacts",
                                  "/api/bitrix///", "/api/bitrix/clients/1%0A/contacts",
                                  "/api/bitrix/clients/1/contacts/5%0A"])
def test_odd_paths_under_our_prefix_are_json_never_a_redirect(client, path):
    r = client.get(path, headers={"Host": "evil.example"})
    assert r.status_code in (400, 404) and r.is_json and "Location" not in r.headers, (path, r.status_code)


@pytest.mark.parametrize("cmd, code", [
    ({"a": "crm.contact.list?filter[email]=x"}, "INVALID_FILTER"),  # would return every row
    ({"a": {"method": "crm.contact.list", "params": {"filter": {">=date_create": "x"}}}}, "INVALID_FILTER"),
    ({"a": {"method": "crm.deal.list", "params": {"order": {"title": "ASC"}}}}, "INVALID_ORDER"),
    ({"a": {"method": "crm.deal.list", "params": {"select": ["ID", "title"]}}}, "INVALID_SELECT"),
    ({"a": {"method": "crm.lead.add", "params": {"fields": {"title": "x"}}}}, "INVALID_FIELD_NAME"),
])
def test_raw_batch_checks_field_names_like_the_list_endpoint(client, cmd, code):
    r = client.post("/api/bitrix/clients/1/batch", json={"cmd": cmd})
    assert r.status_code == 400 and r.get_json()["error"] == code, r.get_json()


@pytest.mark.parametrize("method", ["PROPFIND", "BREW", "TRACE", "PUT"])
def test_any_method_under_our_prefix_is_json(client, method):
    r = client.open("/api/bitrix/clients/1/contacts/5", method=method)
    assert r.status_code == 405 and r.is_json and r.get_json()["error"] == "METHOD_NOT_ALLOWED"
    assert r.headers["Allow"] == "GET, PATCH, DELETE"
    unknown = client.open("/api/bitrix/no/such/thing", method=method)
    assert unknown.status_code == 404 and unknown.get_json()["error"] == "NOT_FOUND"


def test_the_host_apps_own_routes_keep_their_answers(make_app):
    """The JSON catch-all is ours only: a host route's 405 stays the host's."""
    app = make_app()
    app.add_url_rule("/host/page", "host_page", lambda: "hi")
    r = app.test_client().open("/host/page", method="PROPFIND")
    assert r.status_code == 405 and not r.is_json


def _chunked(client, path: str, body: bytes, content_type: str):
    """A body without Content-Length, as a server that de-chunks it hands it to the app."""
    return client.post(path, headers={"Content-Type": content_type, "Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True})


@pytest.mark.parametrize("path, content_type, setting", [
    ("/api/bitrix/clients/1/contacts", "application/json", "BITRIX_MAX_BODY_BYTES"),
    ("/api/bitrix/clients/1/batch", "application/json", "BITRIX_MAX_BODY_BYTES"),
    ("/api/bitrix/webhook", "application/x-www-form-urlencoded", "BITRIX_EVENT_MAX_BYTES"),
])
def test_an_oversized_chunked_body_is_413_not_a_truncated_one(make_app, path, content_type, setting):
    app = make_app(BITRIX_MAX_BODY_BYTES=1000, BITRIX_EVENT_MAX_BYTES=1000)
    big = (b'{"fields": {"NAME": "' + b"x" * 5000 + b'"}}' if content_type == "application/json"
           else b"event=ONCRMDEALADD&data[FIELDS][ID]=" + b"1" * 5000)
    r = _chunked(app.test_client(), path, big, content_type)
    assert r.status_code == 413 and r.get_json()["error"] == "BODY_TOO_LARGE", r.get_json()
    assert setting in r.get_json()["error_description"]


def test_a_small_chunked_body_is_read_whole(make_app):
    app = make_app(BITRIX_MAX_BODY_BYTES=1000)
    r = _chunked(app.test_client(), "/api/bitrix/clients/1/contacts", b'{"fields": {"NAME": "x"}}', "application/json")
    assert r.status_code == 400 and r.get_json()["error"] == "CONFIG_MISSING", r.get_json()  # parsed, then no portal


def test_a_chunked_body_of_exactly_the_limit_is_read(make_app):
    app = make_app(BITRIX_MAX_BODY_BYTES=1000)
    body = b'{"fields": {"NAME": "' + b"x" * (1000 - len(b'{"fields": {"NAME": ""}}')) + b'"}}'
    assert len(body) == 1000
    r = _chunked(app.test_client(), "/api/bitrix/clients/1/contacts", body, "application/json")
    assert r.get_json()["error"] == "CONFIG_MISSING"  # read whole and parsed; no portal configured
    r = _chunked(app.test_client(), "/api/bitrix/clients/1/contacts", body[:-2] + b' "}}', "application/json")
    assert r.status_code == 413  # one byte more


def test_options_says_what_a_path_takes(client):
    r = client.options("/api/bitrix/health")
    assert r.status_code == 200 and r.headers["Allow"] == "GET, HEAD, OPTIONS"
    r = client.options("/api/bitrix/clients/1/contacts/5")
    assert r.headers["Allow"] == "GET, PATCH, DELETE, HEAD, OPTIONS"


def test_path_converters_match_one_segment_so_routing_walks_segments():
    """werkzeug takes a converter whose regex holds a "/" for one that may span segments, and then tries
    every rule using it as a regex over the rest of the path, one rule after another; ours match one
    segment and say so, so a URL is routed by werkzeug's per-segment state machine."""
    from flask_bitrix24.controllers.openapi import CONVERTERS

    for name, converter in CONVERTERS.items():
        assert converter.part_isolating is (name != "bx_any"), name
