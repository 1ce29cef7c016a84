from sqlalchemy import inspect

from app import db


def test_index(client):
    r = client.get("/")
    assert r.status_code == 200
    assert r.mimetype == "text/plain"
    assert "host app" in r.get_data(as_text=True)


def test_login(client):
    r = client.get("/login/1")
    assert r.status_code == 200
    assert "ann@acme.test" in r.get_data(as_text=True)
    assert client.get("/login/99").status_code == 404


def test_bitrix24_api_needs_a_signed_in_user(client):
    r = client.get("/api/bitrix/clients/1/contacts")
    assert r.status_code == 401
    assert r.get_json()["error"] == "UNAUTHORIZED"


def test_bitrix24_api_is_only_for_the_users_own_client(client):
    client.get("/login/1")
    r = client.get("/api/bitrix/clients/2/contacts")
    assert r.status_code == 403
    assert r.get_json()["error"] == "FORBIDDEN"
    # Their own client passes our hook; with no config saved yet the extension says so.
    r = client.get("/api/bitrix/clients/1/contacts")
    assert r.status_code == 400
    assert r.get_json()["error"] == "CONFIG_MISSING"


def test_my_contacts_needs_login(client):
    assert client.post("/my/contacts", json={"name": "Ada"}).status_code == 401


def test_create_all_makes_the_extensions_table_too(app):
    tables = set(inspect(db.engine).get_table_names())
    assert {"users", "clients", "CRMs", "ClientCRMAuth", "seen_events"} <= tables
    assert "bitrix24_events" in tables  # declared on our db.metadata by init_app: same database
