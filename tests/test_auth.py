"""API authentication: bearer key (constant-time), the host's authorize hook, or refuse."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import API_KEY


def test_no_auth_configured_refuses_401(make_app):
    app = make_app(BITRIX_AUTH_DISABLED=False)
    r = app.test_client().get("/api/bitrix/clients/1/contacts")
    assert r.status_code == 401
    assert "BITRIX_API_KEY" in r.get_json()["error_description"]


def test_bearer_key_required_and_checked(make_app):
    app = make_app(BITRIX_AUTH_DISABLED=False, BITRIX_API_KEY=API_KEY)
    c = app.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEY}"},
                    {"Authorization": f"Bearer {API_KEY}x"}, {"Authorization": "Bearer "}):
        r = c.get("/api/bitrix/clients/1/config/debug", headers=headers)
        assert r.status_code == 401, headers
        assert r.get_json()["error"] == "UNAUTHORIZED"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = c.get("/api/bitrix/clients/1/config/debug", headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200


def test_several_keys_for_rotation(make_app):
    app = make_app(BITRIX_AUTH_DISABLED=False, BITRIX_API_KEY="new-key-1,old-key-2")
    c = app.test_client()
    assert c.get("/api/bitrix/clients/1/config", headers={"Authorization": "Bearer old-key-2"}).status_code == 200
    assert c.get("/api/bitrix/clients/1/config", headers={"Authorization": "Bearer new-key-1"}).status_code == 200
    assert c.get("/api/bitrix/clients/1/config", headers={"Authorization": "Bearer new-key-1,old-key-2"}).status_code == 401


def test_key_also_guards_unknown_paths(make_app):
    app = make_app(BITRIX_AUTH_DISABLED=False, BITRIX_API_KEY=API_KEY)
    assert app.test_client().get("/api/bitrix/anything").status_code == 401


def test_authorize_hook_decides_per_client(make_app):
    from flask_bitrix24.extensions import bitrix24

    seen = []

    def hook(client_id):
        seen.append(client_id)
        return client_id == 1

    bitrix24.hooks.authorize = hook
    try:
        app = make_app(BITRIX_AUTH_DISABLED=False)
        c = app.test_client()
        assert c.get("/api/bitrix/clients/1/config").status_code == 200
        r = c.get("/api/bitrix/clients/2/config")
        assert r.status_code == 403 and r.get_json()["error"] == "FORBIDDEN"
        assert seen == [1, 2]
    finally:
        bitrix24.hooks.authorize = None


def test_path_ids_are_parsed_once_and_the_hook_sees_only_ints(make_app):
    from flask_bitrix24.extensions import bitrix24

    seen = []
    bitrix24.hooks.authorize = lambda client_id: seen.append(client_id) or True
    try:
        c = make_app(BITRIX_AUTH_DISABLED=False).test_client()
        # A malformed client id is refused before the hook: it must not read it as "no client".
        r = c.get("/api/bitrix/clients/abc/contacts")
        assert r.status_code == 400 and r.get_json() == {
            "error": "INVALID_ID", "error_description": "client_id must be a positive integer, got 'abc'",
            "field": "client_id"}
        assert seen == []
        # Other malformed ids are refused once the hook has let the caller in.
        refused = [
            (c.get("/api/bitrix/clients/1/contacts/1x"), "id", "id must be a positive integer, got '1x'"),
            (c.get("/api/bitrix/clients/1/items/0/5"), "entity_type_id",
             "entity_type_id must be a positive integer, got '0'"),
            (c.delete("/api/bitrix/clients/1/items/128/2147483648"), "id", "id is too large (at most 2147483647)"),
            (c.post("/api/bitrix/clients/1/events/x/replay", json={}), "event_id",
             "event_id must be a positive integer, got 'x'"),
        ]
        for r, field, description in refused:
            assert r.status_code == 400 and r.headers["X-Request-ID"]
            assert r.get_json() == {"error": "INVALID_ID", "error_description": description, "field": field}
        assert seen == [1, 1, 1, 1] and all(type(x) is int for x in seen)
        r = c.get("/api/bitrix/clients/7/config")
        assert r.status_code == 200 and r.get_json()["result"]["client_id"] == 7
        assert seen[-1] == 7
    finally:
        bitrix24.hooks.authorize = None


def test_a_caller_without_credentials_gets_401_before_any_id_check(make_app):
    c = make_app(BITRIX_AUTH_DISABLED=False, BITRIX_API_KEY=API_KEY).test_client()
    for path in ("/api/bitrix/clients/abc/contacts", "/api/bitrix/clients/1/contacts/1x"):
        assert c.get(path).status_code == 401
        assert c.get(path, headers={"Authorization": f"Bearer {API_KEY}"}).get_json()["error"] == "INVALID_ID"


def test_auth_disabled_logs_a_warning(make_app, caplog):
    with caplog.at_level(logging.WARNING):
        app = make_app(BITRIX_AUTH_DISABLED=True)
    assert any("BITRIX_AUTH_DISABLED" in r.getMessage() for r in caplog.records)
    assert app.test_client().get("/api/bitrix/clients/1/config").status_code == 200


def test_event_receiver_does_not_need_the_api_key(make_app):
    app = make_app(BITRIX_AUTH_DISABLED=False, BITRIX_API_KEY=API_KEY, BITRIX_OUTBOUND_TOKEN="evt-token")
    r = app.test_client().post(
        "/api/bitrix/webhook",
        data={"event": "ONCRMDEALUPDATE", "data[FIELDS][ID]": "5", "ts": "1", "auth[application_token]": "evt-token"},
    )
    assert r.status_code == 200


def test_authorize_decorator_as_the_readme_shows(make_app):
    from flask import request
    from flask_bitrix24.extensions import bitrix24

    @bitrix24.authorize
    def may_use(client_id):
        return request.headers.get("X-User-Client") == str(client_id)

    try:
        app = make_app(BITRIX_AUTH_DISABLED=False)
        c = app.test_client()
        assert c.get("/api/bitrix/clients/7/config", headers={"X-User-Client": "7"}).status_code == 200
        assert c.get("/api/bitrix/clients/7/config", headers={"X-User-Client": "8"}).status_code == 403
    finally:
        bitrix24.hooks.authorize = None


@pytest.mark.parametrize("sent", [API_KEY[:-1], API_KEY[:8], API_KEY + "x", API_KEY.upper(), " " + API_KEY + "x", ""])
def test_a_key_that_is_not_exactly_the_key_is_refused(make_app, sent):
    app = make_app(BITRIX_AUTH_DISABLED=False, BITRIX_API_KEY=API_KEY)
    r = app.test_client().get("/api/bitrix/clients/1/config", headers={"Authorization": f"Bearer {sent}"})
    assert r.status_code == 401


@pytest.mark.parametrize("decision, status", [(None, 401), (0, 403), ("", 403), ("yes", 403), (1, 403),
                                              (False, 403), (True, 200)])
def test_only_true_from_the_hook_allows(make_app, decision, status):
    from flask_bitrix24.extensions import bitrix24

    bitrix24.hooks.authorize = lambda client_id: decision
    try:
        app = make_app(BITRIX_AUTH_DISABLED=False)
        assert app.test_client().get("/api/bitrix/clients/1/config").status_code == status
    finally:
        bitrix24.hooks.authorize = None


def test_secrets_are_compared_in_constant_time(make_app, monkeypatch):
    """Bearer keys and Bitrix24's application token go through hmac.compare_digest (an ``==`` would
    leak, by its timing, how much of a guess was right); each comparison is seen here."""
    import hmac

    from tests.test_webhook import event_form

    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    app = make_app(BITRIX_AUTH_DISABLED=False, BITRIX_API_KEY=API_KEY, BITRIX_OUTBOUND_TOKEN="tok-env-abcdef")
    c = app.test_client()
    assert c.get("/api/bitrix/clients/1/config", headers={"Authorization": "Bearer guess-1"}).status_code == 401
    assert (b"guess-1", API_KEY.encode()) in compared
    compared.clear()
    assert c.post("/api/bitrix/webhook", data=event_form(token="guess-2")).status_code == 401
    assert (b"guess-2", b"tok-env-abcdef") in compared
