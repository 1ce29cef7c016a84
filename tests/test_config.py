"""Per-client config: webhook_base validation, encrypted storage, masked views, debug, delete."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from flask_bitrix24.services.client_config import DEFAULT_ALLOWED_HOSTS, InvalidConfig, validate_webhook_base

from tests.conftest import PORTAL_BASE, PORTAL_SECRET, portal_url

ALLOW_LOOPBACK = ("127.0.0.1", "localhost", *DEFAULT_ALLOWED_HOSTS)


@pytest.mark.parametrize(
    "value",
    [
        "http://b24-x.bitrix24.com/rest/1/abc123/",  # plain http to a non-loopback host
        "https://portal.example.com/rest/1/abc123/",  # not allowlisted
        "https://x.bitrix24.com.evil.example/rest/1/abc123/",  # allowlisted zone as a prefix
        "https://evilbitrix24.com/rest/1/abc123/",  # suffix without the dot
        "https://bitrix24.com/rest/1/abc123/",  # the zone itself is no portal
        "https://b24-x.bitrіx24.com/rest/1/abc123/",  # Cyrillic "і" look-alike
        "https://xn--bitrx24-3nf.com/rest/1/abc123/",  # punycode look-alike
        "https://93.184.216.34/rest/1/abc123/",  # dotted IP
        "https://2130706433/rest/1/abc123/",  # decimal IP
        "https://0x7f000001/rest/1/abc123/",  # hex IP
        "https://0177.0.0.1/rest/1/abc123/",  # octal IP
        "https://[::1]/rest/1/abc123/",  # IPv6
        "https://[2001:db8::1]/rest/1/abc123/",  # IPv6
        "https://evil.example@b24-x.bitrix24.com/rest/1/abc123/",  # userinfo
        "https://b24-x.bitrix24.com@evil.example/rest/1/abc123/",  # userinfo trick the other way
        "https://user:pass@b24-x.bitrix24.com/rest/1/abc123/",
        "ftp://b24-x.bitrix24.com/rest/1/abc123/",  # other schemes
        "javascript:alert(1)",
        "file:///etc/passwd",
        "b24-x.bitrix24.com/rest/1/abc123/",  # no scheme
        "https://b24-x.bitrix24.com/",  # no /rest/ path
        "https://b24-x.bitrix24.com/rest/abc123/",  # no user id
        "https://b24-x.bitrix24.com/rest/0/abc123/",
        "https://b24-x.bitrix24.com/rest/1/abc123/crm.contact.add",  # a method, not a base
        "https://b24-x.bitrix24.com/rest/1/../../admin/",
        "https://b24-x.bitrix24.com/rest/1/abc123/?x=1",
        "https://b24-x.bitrix24.com/rest/1/abc123/#frag",
        "https://b24-x.bitrix24.com:99999/rest/1/abc123/",
        "https://b24-x.bitrix24.com\\@evil.example/rest/1/abc123/",
        "https://b24-x.bitrix24.com /rest/1/abc123/",
        "",
        "https://",
    ],
)
def test_refused_webhook_bases(value):
    with pytest.raises(InvalidConfig) as info:
        validate_webhook_base(value, DEFAULT_ALLOWED_HOSTS)
    assert info.value.field == "webhook_base"


@pytest.mark.parametrize("value", [None, 42, ["https://b24-x.bitrix24.com/rest/1/abc/"], {"u": 1}, True])
def test_non_string_webhook_base_refused(value):
    with pytest.raises(InvalidConfig):
        validate_webhook_base(value, DEFAULT_ALLOWED_HOSTS)


def test_http_loopback_only_when_listed_explicitly():
    base = "http://127.0.0.1:5002/rest/1/demo/"
    with pytest.raises(InvalidConfig):
        validate_webhook_base(base, DEFAULT_ALLOWED_HOSTS)
    assert validate_webhook_base(base, ALLOW_LOOPBACK) == base
    assert validate_webhook_base("http://localhost:5002/rest/1/demo", ALLOW_LOOPBACK) == "http://localhost:5002/rest/1/demo/"
    # a listed loopback name does not open other spellings of the same address
    with pytest.raises(InvalidConfig):
        validate_webhook_base("http://2130706433:5002/rest/1/demo/", ALLOW_LOOPBACK)
    with pytest.raises(InvalidConfig):
        validate_webhook_base("http://127.0.0.2:5002/rest/1/demo/", ALLOW_LOOPBACK)


@pytest.mark.parametrize(
    "value,expected",
    [
        ("https://b24-k7mbrm.bitrix24.com/rest/1/bn97b3lpvwpp7dxw/", "https://b24-k7mbrm.bitrix24.com/rest/1/bn97b3lpvwpp7dxw/"),
        ("https://Portal.Bitrix24.DE/rest/12/Secret_1/", "https://portal.bitrix24.de/rest/12/Secret_1/"),
        ("  https://a.bitrix24.com.br/rest/3/abc  ", "https://a.bitrix24.com.br/rest/3/abc/"),
        ("https://a.bitrix24.ru:443/rest/3/abc/", "https://a.bitrix24.ru/rest/3/abc/"),  # the scheme's own port
    ],
)
def test_accepted_webhook_bases_are_normalised(value, expected):
    assert validate_webhook_base(value, DEFAULT_ALLOWED_HOSTS) == expected


def test_custom_allowlist_replaces_the_default(make_app):
    app = make_app(BITRIX_ALLOWED_HOSTS="crm.mycorp.example, *.b24.mycorp.example")
    c = app.test_client()
    assert c.post("/api/bitrix/clients/1/config", json={"webhook_base": "https://crm.mycorp.example/rest/1/abc/"}).status_code == 201
    assert c.post("/api/bitrix/clients/2/config", json={"webhook_base": "https://x.b24.mycorp.example/rest/1/abc/"}).status_code == 201
    r = c.post("/api/bitrix/clients/3/config", json={"webhook_base": PORTAL_BASE})
    assert r.status_code == 400 and r.get_json()["error"] == "INVALID_CONFIG"


def test_save_answers_masked_and_refuses_bad_input(client):
    r = client.post("/api/bitrix/clients/1/config", json={"webhook_base": "https://evil.example/rest/1/abc/"})
    assert r.status_code == 400
    body = r.get_json()
    assert body["error"] == "INVALID_CONFIG" and body["field"] == "webhook_base"
    assert "BITRIX_ALLOWED_HOSTS" in body["error_description"]

    r = client.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE, "outbound_token": "mkv9w4dxxvbao7gaemm0y7eay4uctbme"})
    assert r.status_code == 201
    result = r.get_json()["result"]
    assert result["portal_domain"] == "b24-test.bitrix24.com"
    assert result["source"] == "database"
    assert PORTAL_SECRET not in r.get_data(as_text=True)
    assert "mkv9w4dxxvbao7gaemm0y7eay4uctbme" not in r.get_data(as_text=True)
    assert result["outbound_token"] == "mkv9…"
    assert result["webhook_base"] == "https://b24-test.bitrix24.com/rest/1/s3cr…/"

    # a second save updates (200) and merges: the token stays when only the base changes
    r = client.post("/api/bitrix/clients/1/config", json={"webhook_base": "https://other.bitrix24.eu/rest/2/zzzzzzzzzzzz/"})
    assert r.status_code == 200
    assert r.get_json()["result"]["outbound_token"] == "mkv9…"
    assert r.get_json()["result"]["portal_domain"] == "other.bitrix24.eu"


@pytest.mark.parametrize(
    "body,field",
    [
        ({"webhook_base": 123}, "webhook_base"),
        ({"outbound_token": "tok"}, "webhook_base"),  # no saved config yet: base required
        ({"webhook_base": PORTAL_BASE, "outbound_token": 5}, "outbound_token"),
        ({"webhook_base": PORTAL_BASE, "outbound_token": "has space"}, "outbound_token"),
        ({"webhook_base": PORTAL_BASE, "extra": 1}, "extra"),
    ],
)
def test_save_config_field_errors(client, body, field):
    r = client.post("/api/bitrix/clients/1/config", json=body)
    assert r.status_code == 400
    assert r.get_json()["field"] == field


def test_secrets_not_in_clear_in_the_database_file(make_app, tmp_path):
    db_file = tmp_path / "secrets.db"
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{db_file}")
    c = app.test_client()
    c.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE, "outbound_token": "TOKEN-in-clear-xyz"})
    with app.app_context():
        from flask_bitrix24.extensions import db

        db.engine.dispose()
    raw = Path(db_file).read_bytes()
    assert PORTAL_SECRET.encode() not in raw
    assert b"TOKEN-in-clear-xyz" not in raw
    assert b"b24-test.bitrix24.com" in raw  # the domain stays in clear to route events


def test_secrets_never_logged(configured, portal, caplog):
    caplog.set_level(logging.DEBUG)
    portal.post(portal_url("crm.contact.get"), status=401, json={"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"})
    configured.get("/api/bitrix/clients/1/contacts/1")
    configured.get("/api/bitrix/clients/1/config/debug")
    configured.post("/api/bitrix/clients/1/config", json={"webhook_base": "https://bad.example/rest/1/SECRETinERR/"})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert PORTAL_SECRET not in text and "tok-c1-abcdef" not in text and "SECRETinERR" not in text
    assert caplog.records  # something was logged


def test_key_rotation_reads_old_rows(make_app, secret_key):
    from cryptography.fernet import Fernet

    app = make_app()
    app.test_client().post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE})
    new_key = Fernet.generate_key().decode()
    rotated = make_app(BITRIX_SECRET_KEY=f"{new_key},{secret_key}")
    r = rotated.test_client().get("/api/bitrix/clients/1/config")
    assert r.status_code == 200 and r.get_json()["result"]["portal_domain"] == "b24-test.bitrix24.com"
    wrong = make_app(BITRIX_SECRET_KEY=new_key)
    r = wrong.test_client().get("/api/bitrix/clients/1/config")
    assert r.status_code == 500 and r.get_json()["error"] == "SECRET_KEY_ERROR"
    assert PORTAL_SECRET not in r.get_data(as_text=True)


def test_bad_secret_key_fails_fast(make_app):
    from flask_bitrix24.services.secrets import SecretKeyError

    with pytest.raises(SecretKeyError, match="generate-key"):
        make_app(BITRIX_SECRET_KEY="not-a-fernet-key")


def test_generated_key_file_is_private(make_app, tmp_path, caplog, monkeypatch):
    from flask_bitrix24.services.secrets import load_cipher

    instance = tmp_path / "inst"
    with caplog.at_level(logging.WARNING):
        cipher = load_cipher("", str(instance))
    key_file = instance / "bitrix24_secret.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert any("BITRIX_SECRET_KEY is not set" in r.getMessage() for r in caplog.records)
    token = cipher.encrypt(b"x")
    assert load_cipher("", str(instance)).decrypt(token) == b"x"  # same key on the next start


def test_debug_reports_source_host_masked_secrets_and_crm(client, make_app):
    r = client.get("/api/bitrix/clients/9/config/debug")
    body = r.get_json()["result"]
    assert r.status_code == 200 and body["source"] == "none" and body["webhook_base"] is None
    assert body["crm"]["name"] == "Bitrix24" and isinstance(body["crm"]["id"], int)

    client.post("/api/bitrix/clients/9/config", json={"webhook_base": PORTAL_BASE, "outbound_token": "abcdefghijkl"})
    body = client.get("/api/bitrix/clients/9/config/debug").get_json()["result"]
    assert body["source"] == "database" and body["portal_domain"] == "b24-test.bitrix24.com"
    assert body["outbound_token"] == "abc…" and PORTAL_SECRET not in str(body)

    env_app = make_app(BITRIX_WEBHOOK_BASE=PORTAL_BASE, BITRIX_OUTBOUND_TOKEN="envtoken1234")
    body = env_app.test_client().get("/api/bitrix/clients/10/config/debug").get_json()["result"]
    assert body["source"] == "environment" and body["outbound_token"] == "env…"
    assert PORTAL_SECRET not in str(body)


def test_debug_check_runs_a_live_profile_call(configured, portal):
    portal.post(portal_url("profile"), json={"result": {"ID": "1", "NAME": "Admin", "LAST_NAME": "A", "ADMIN": True}})
    body = configured.get("/api/bitrix/clients/1/config/debug?check=1").get_json()["result"]
    assert body["check"] == {"ok": True, "method": "profile", "user": {"ID": "1", "NAME": "Admin", "LAST_NAME": "A", "ADMIN": True}}
    portal.replace("POST", portal_url("profile"), status=401, json={"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"})
    body = configured.get("/api/bitrix/clients/1/config/debug?check=1").get_json()["result"]
    assert body["check"]["ok"] is False and body["check"]["error"] == "INVALID_CREDENTIALS"


def test_delete_config(configured):
    assert configured.delete("/api/bitrix/clients/1/config").get_json() == {"result": True}
    r = configured.delete("/api/bitrix/clients/1/config")
    assert r.status_code == 404 and r.get_json()["error"] == "CONFIG_NOT_FOUND"
    assert configured.get("/api/bitrix/clients/1/contacts").get_json()["error"] == "CONFIG_MISSING"


def test_invalid_environment_webhook_base_is_config_missing(make_app, portal):
    app = make_app(BITRIX_WEBHOOK_BASE="http://evil.example/rest/1/abc/")
    r = app.test_client().get("/api/bitrix/clients/1/contacts")
    assert r.status_code == 400 and r.get_json()["error"] == "CONFIG_MISSING"
    assert "BITRIX_WEBHOOK_BASE" in r.get_json()["error_description"]
    assert not portal.calls


def test_own_rate_limit_is_saved_and_plan_and_rate_limit_together_are_refused(client):
    base = "https://b24-x.bitrix24.com/rest/1/abcdefgh/"
    r = client.post("/api/bitrix/clients/1/config", json={"webhook_base": base, "rate_limit": {"burst": 250, "drain": 5}})
    assert r.status_code == 201 and r.get_json()["result"]["rate_limit"] == {"burst": 250, "drain": 5.0}
    r = client.post("/api/bitrix/clients/1/config", json={"plan": "standard", "rate_limit": {"burst": 10, "drain": 1}})
    assert r.status_code == 400 and r.get_json()["field"] == "plan"
    assert client.get("/api/bitrix/clients/1/config").get_json()["result"]["rate_limit"]["burst"] == 250


@pytest.mark.parametrize("allowed, base, ok", [
    ("", "https://b24-x.bitrix24.com:8443/rest/1/abcdefgh/", False),  # a cloud portal answers on 443
    ("", "https://b24-x.bitrix24.com:443/rest/1/abcdefgh/", True),
    ("*.bitrix24.com,b24-x.bitrix24.com:8443", "https://b24-x.bitrix24.com:8443/rest/1/abcdefgh/", True),
    ("crm.example.org", "https://crm.example.org:8443/rest/1/abcdefgh/", True),  # listed exactly: its own
    ("crm.example.org", "http://crm.example.org/rest/1/abcdefgh/", False),  # listed, but http is loopback only
])
def test_ports_other_than_443_only_where_listed(make_app, allowed, base, ok):
    app = make_app(BITRIX_ALLOWED_HOSTS=allowed)
    r = app.test_client().post("/api/bitrix/clients/1/config", json={"webhook_base": base})
    assert (r.status_code == 201) is ok, r.get_json()


def test_concurrent_first_saves_for_one_client_all_succeed_with_one_row(make_app, tmp_path, database_url):
    import threading

    from flask_bitrix24 import runtime
    from sqlalchemy import func, select

    app = make_app()
    statuses, start = [], threading.Barrier(6)

    def save(i):
        c = app.test_client()
        start.wait()
        r = c.post("/api/bitrix/clients/7/config",
                   json={"webhook_base": f"https://b24-{i}.bitrix24.com/rest/1/abcdefgh/"})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(statuses) and all(s in (200, 201) for s in statuses), statuses
    with app.app_context():
        model = runtime(app).store.model
        assert runtime(app).session.execute(select(func.count()).select_from(model)).scalar_one() == 1


def test_the_schemes_own_port_is_dropped_so_events_still_find_the_client(make_app):
    """Bitrix24's auth[domain] never names :443: a base saved with it must still route events."""
    from tests.test_webhook import event_form

    app = make_app()
    c = app.test_client()
    r = c.post("/api/bitrix/clients/1/config", json={"webhook_base": "https://b24-test.bitrix24.com:443/rest/1/abcdefgh/",
                                                     "outbound_token": "tok-443-abcdef"})
    assert r.status_code == 201 and r.get_json()["result"]["portal_domain"] == "b24-test.bitrix24.com"
    delivery = c.post("/api/bitrix/webhook", data=event_form(token="tok-443-abcdef"))
    assert delivery.status_code == 200, delivery.get_json()
    delivery.close()
    assert c.get("/api/bitrix/clients/1/events").get_json()["total"] == 1


def test_an_ipv6_loopback_portal_is_stored_with_its_brackets(make_app):
    app = make_app(BITRIX_ALLOWED_HOSTS="::1")
    c = app.test_client()
    r = c.post("/api/bitrix/clients/1/config", json={"webhook_base": "http://[::1]:5002/rest/1/demo/"})
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["result"]["portal_domain"] == "[::1]:5002"
    assert c.get("/api/bitrix/clients/1/config").status_code == 200
    assert c.get("/api/bitrix/clients/1/config/debug").status_code == 200


def test_a_row_stored_with_443_in_its_domain_still_gets_its_events(make_app):
    """Rows saved before the scheme's own port was dropped (or written so by a host)."""
    from flask_bitrix24 import runtime

    from tests.test_webhook import event_form

    app = make_app()
    c = app.test_client()
    c.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE, "outbound_token": "tok-old-abcdef"})
    with app.app_context():
        rt = runtime(app)
        row = rt.session.execute(rt.store._select()).scalars().one()
        row.portal_domain = "b24-test.bitrix24.com:443"
        rt.session.commit()
    r = c.post("/api/bitrix/webhook", data=event_form(token="tok-old-abcdef"))
    assert r.status_code == 200, r.get_json()
