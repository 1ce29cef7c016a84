"""The extension inside a host app: the host's db, session, migrations metadata and its own tables.

Each test builds a small host the way a host writes one: its own ``db = SQLAlchemy()``, the extension
object made before the host's models, its own ``CRMs`` (with a required column we know nothing of) and
``ClientCRMAuth`` (other column names, the webhook URL in plain text), ``db.create_all()`` in tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from flask import Flask, jsonify
from flask_bitrix24 import Bitrix24, ConfigMissing, CRMRow, EncryptedStore, EventLogMixin, ModelStore, bx_call, runtime
from flask_bitrix24.models import TableNameTaken
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, Integer, String, Text, inspect, select, text
from sqlalchemy.orm import Mapped, mapped_column

from .conftest import PORTAL_BASE, portal_url

ROOT = Path(__file__).resolve().parent.parent


class Host:
    def __init__(self, database_url: str, **ext_options) -> None:
        self.db = db = SQLAlchemy()
        self.bitrix24 = Bitrix24(db=db, **ext_options)  # at import time, before the models

        class CRMs(db.Model):
            __tablename__ = "CRMs"
            id: Mapped[int] = mapped_column(Integer, primary_key=True)
            name: Mapped[str] = mapped_column(String(64), unique=True)
            slug: Mapped[str] = mapped_column(String(64), nullable=False)  # the host's own required column

        class ClientCRMAuth(db.Model):
            __tablename__ = "ClientCRMAuth"
            id: Mapped[int] = mapped_column(Integer, primary_key=True)
            client_id: Mapped[int] = mapped_column(Integer, nullable=False)
            crm_id: Mapped[int] = mapped_column(ForeignKey("CRMs.id"), nullable=False)
            webhook_url: Mapped[str | None] = mapped_column(Text)
            app_token: Mapped[str | None] = mapped_column(String(255))

        class Note(db.Model):  # any host table: shows a host transaction and ours are one
            id: Mapped[int] = mapped_column(Integer, primary_key=True)
            text: Mapped[str] = mapped_column(String(64))

        self.CRMs, self.ClientCRMAuth, self.Note = CRMs, ClientCRMAuth, Note
        self.database_url = database_url

    def app(self, store=None, instance_path=None, **config) -> Flask:
        app = Flask("host", instance_path=instance_path)
        app.config.update({"TESTING": True, "SQLALCHEMY_DATABASE_URI": self.database_url,
                           "BITRIX_AUTH_DISABLED": True, "BITRIX_WEBHOOK_BASE": "", "BITRIX_SECRET_KEY": "",
                           "BITRIX_ALLOWED_HOSTS": "", "BITRIX_VERIFY_CONFIG": False, **config})
        self.db.init_app(app)
        self.bitrix24.init_app(app, store=store)

        @app.post("/my/contacts")
        def my_contact():  # a host view calling our service
            return jsonify(bx_call("crm.contact.add", {"fields": {"NAME": "Ada"}}, client_id=1)["result"])

        with app.app_context():
            self.db.drop_all()
            self.db.create_all()
        self._apps = [*getattr(self, "_apps", []), app]
        return app

    def mapped_store(self, defaults=None) -> ModelStore:
        return ModelStore(self.ClientCRMAuth, webhook_base="webhook_url", outbound_token="app_token",
                          crm=CRMRow(self.CRMs, defaults=defaults))

    def close(self) -> None:
        for app in getattr(self, "_apps", []):
            with app.app_context():
                self.db.drop_all()
                self.db.engine.dispose()


@pytest.fixture
def host(database_url):
    h = Host(database_url)
    yield h
    h.close()


def test_create_all_gives_the_host_our_tables_in_its_database(host):
    app = host.app(store=host.mapped_store())
    with app.app_context():
        tables = set(inspect(host.db.engine).get_table_names())
    # ours (only the event log with a mapped store) beside the host's, one metadata, one database
    assert {"bitrix24_events", "CRMs", "ClientCRMAuth", "note"} <= tables
    assert "bitrix24_client_configs" not in tables and "client_crm_auth" not in tables
    assert "bitrix24_app_installations" not in tables  # app mode is off: no table a host did not ask for
    assert "bitrix24_sync_state" not in tables  # nor reconciliation
    assert runtime(app).db is host.db and runtime(app).event_model.__table__.metadata is host.db.metadata


def test_setup_adds_the_crm_row_only_when_told_how(host):
    app = host.app(store=host.mapped_store())  # no defaults: the host's CRMs.slug has no value we could use
    result = app.test_cli_runner().invoke(args=["bitrix24", "setup"])
    assert result.exit_code == 1 and "defaults" in result.output
    assert "has no 'Bitrix24' row" in result.output
    with app.app_context():
        assert host.db.session.execute(select(host.CRMs)).first() is None

    store = host.mapped_store(defaults={})  # says how, but not for slug: named, not crashed
    app2 = host.app(store=store)
    result = app2.test_cli_runner().invoke(args=["bitrix24", "setup"])
    assert result.exit_code == 1 and "slug" in result.output

    app3 = host.app(store=host.mapped_store(defaults={"slug": "bitrix24"}))
    result = app3.test_cli_runner().invoke(args=["bitrix24", "setup"])
    assert result.exit_code == 0, result.output
    assert "added Bitrix24 to the CRMs table" in result.output
    again = app3.test_cli_runner().invoke(args=["bitrix24", "setup"])
    assert again.exit_code == 0 and "nothing to do" in again.output
    with app3.app_context():
        (crm,) = host.db.session.execute(select(host.CRMs)).scalars()
        assert (crm.name, crm.slug) == ("Bitrix24", "bitrix24")


def test_setup_reports_a_crm_row_the_table_refuses(host):
    app = host.app(store=host.mapped_store(defaults={"slug": None}))  # NOT NULL: refused by the database
    result = app.test_cli_runner().invoke(args=["bitrix24", "setup"])
    assert result.exit_code == 1 and "refused the 'Bitrix24' row" in result.output


def test_setup_names_missing_tables_and_creates_none(host):
    app = host.app(store=host.mapped_store(defaults={"slug": "b"}))
    with app.app_context():
        runtime(app).event_model.__table__.drop(host.db.engine)
    result = app.test_cli_runner().invoke(args=["bitrix24", "setup"])
    assert result.exit_code == 1 and "bitrix24_events" in result.output and "flask db migrate" in result.output
    with app.app_context():
        assert "bitrix24_events" not in inspect(host.db.engine).get_table_names()


def test_setup_names_columns_an_earlier_version_of_our_table_lacks(host):
    """A host that ran reconciliation before the mirror came has bitrix24_sync_state without its columns:
    setup says so (instead of reconciliation failing at 3 a.m. with "no such column")."""
    app = host.app(store=host.mapped_store(defaults={"slug": "b"}), BITRIX_SYNC_ENTITIES="contacts")
    with app.app_context():
        table = runtime(app).sync_state_model.__table__
        table.drop(host.db.engine)
        host.db.session.execute(text(f"CREATE TABLE {table.name} (id INTEGER PRIMARY KEY, client_id INTEGER NOT NULL, "
                                     "entity VARCHAR(64) NOT NULL)"))
        host.db.session.commit()
        assert "bitrix24_mirror_contacts" in inspect(host.db.engine).get_table_names()
    result = app.test_cli_runner().invoke(args=["bitrix24", "setup"])
    assert result.exit_code == 1 and "column(s) missing in bitrix24_sync_state (" in result.output, result.output
    assert "mirror" in result.output and "flask db migrate" in result.output


def test_the_mirror_tables_are_declared_only_when_asked(database_url):
    plain = Host(database_url)
    plain.app(store=plain.mapped_store(defaults={"slug": "b"}))
    assert not [t for t in plain.db.metadata.tables if t.startswith("bitrix24_mirror") or t == "bitrix24_sync_state"]
    plain.close()
    asked = Host(database_url)
    asked.app(store=asked.mapped_store(defaults={"slug": "b"}), BITRIX_SYNC_ENTITIES="deals, contacts")
    assert {t for t in asked.db.metadata.tables if t.startswith("bitrix24_")} >= {
        "bitrix24_mirror_contacts", "bitrix24_mirror_deals", "bitrix24_sync_state"}
    assert "bitrix24_mirror_leads" not in asked.db.metadata.tables
    asked.close()


def test_config_saved_through_our_endpoint_lands_in_the_hosts_table(host, portal):
    app = host.app(store=host.mapped_store(defaults={"slug": "bitrix24"}))
    c = app.test_client()
    r = c.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE, "outbound_token": "tok-host-1"})
    assert r.status_code == 201, r.get_json()
    with app.app_context():
        (row,) = host.db.session.execute(select(host.ClientCRMAuth)).scalars()
        crm_id = host.db.session.execute(select(host.CRMs.id).where(host.CRMs.name == "Bitrix24")).scalar_one()
        assert (row.client_id, row.webhook_url, row.app_token, row.crm_id) == (1, PORTAL_BASE, "tok-host-1", crm_id)

    portal.post(portal_url("crm.contact.add"), json={"result": 41, "time": {}})
    assert c.post("/api/bitrix/clients/1/contacts", json={"fields": {"NAME": "Ada"}}).get_json() == {"result": 41}
    portal.post(portal_url("crm.contact.add"), json={"result": 42, "time": {}})
    assert c.post("/my/contacts").get_json() == 42  # bx_call from the host's own view, same config

    # An event for that portal is verified against the token in the host's column and stored.
    r = c.post("/api/bitrix/webhook", data={"event": "ONCRMCONTACTADD", "data[FIELDS][ID]": "41", "ts": "1",
                                            "auth[domain]": "b24-test.bitrix24.com",
                                            "auth[application_token]": "tok-host-1"})
    assert r.status_code == 200
    bad = c.post("/api/bitrix/webhook", data={"event": "ONCRMCONTACTADD", "auth[domain]": "b24-test.bitrix24.com",
                                              "auth[application_token]": "tok-other"})
    assert bad.status_code == 401
    with app.app_context():
        (event,) = host.db.session.execute(select(runtime(app).event_model)).scalars()
        assert (event.client_id, event.entity_id) == (1, "41")
    assert c.delete("/api/bitrix/clients/1/config").status_code == 200
    with app.app_context():
        assert host.db.session.execute(select(host.ClientCRMAuth)).first() is None


def test_a_row_of_another_crm_is_not_ours(host):
    app = host.app(store=host.mapped_store(defaults={"slug": "bitrix24"}))
    with app.app_context():
        other = host.CRMs(name="HubSpot", slug="hubspot")
        host.db.session.add(other)
        host.db.session.flush()
        host.db.session.add(host.ClientCRMAuth(client_id=1, crm_id=other.id, webhook_url=PORTAL_BASE))
        host.db.session.commit()
    r = app.test_client().get("/api/bitrix/clients/1/config")
    assert r.get_json()["result"]["source"] == "none"


def test_a_host_transaction_includes_ours(host):
    app = host.app(store=host.mapped_store(defaults={"slug": "bitrix24"}))
    with app.test_request_context():
        from flask_bitrix24.services.client_config import save_config

        host.db.session.add(host.Note(text="written with the config"))
        save_config(3, {"webhook_base": PORTAL_BASE})  # our commit is the host session's commit
        host.db.session.rollback()
        assert host.db.session.execute(select(host.Note.text)).scalar_one() == "written with the config"


def test_default_store_is_our_encrypted_table_on_the_hosts_db(host, secret_key):
    app = host.app(BITRIX_SECRET_KEY=secret_key)
    r = app.test_client().post("/api/bitrix/clients/5/config", json={"webhook_base": PORTAL_BASE})
    assert r.status_code == 201
    with app.app_context():
        store = runtime(app).store
        assert isinstance(store, EncryptedStore) and store.model.__tablename__ == "bitrix24_client_configs"
        (row,) = host.db.session.execute(select(store.model)).scalars()
        assert PORTAL_BASE not in row.credentials and "s3cr3t" not in row.credentials


def test_no_key_file_without_encrypted_secrets(host, tmp_path):
    app = host.app(store=host.mapped_store(defaults={"slug": "b"}), instance_path=str(tmp_path / "instance"))
    app.test_client().post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE})
    assert not (tmp_path / "instance").exists()


def test_a_host_model_of_our_table_name_is_not_claimed(database_url):
    db = SQLAlchemy()
    ext = Bitrix24(db=db)

    class Mine(db.Model):
        __tablename__ = "bitrix24_events"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)

    app = Flask("host")
    app.config.update(SQLALCHEMY_DATABASE_URI=database_url)
    db.init_app(app)
    with pytest.raises(TableNameTaken, match="event_model"):
        ext.init_app(app)
    assert db.metadata.tables["bitrix24_events"] is Mine.__table__


def test_a_composed_event_model_with_extra_columns(database_url):
    db = SQLAlchemy()

    class MyEvent(EventLogMixin, db.Model):
        __tablename__ = "crm_events"
        tag: Mapped[str | None] = mapped_column(String(16))

    ext = Bitrix24(db=db, event_model=MyEvent)
    app = Flask("host")
    app.config.update(SQLALCHEMY_DATABASE_URI=database_url, BITRIX_OUTBOUND_TOKEN="tok-123456",
                      BITRIX_AUTH_DISABLED=True)
    db.init_app(app)
    ext.init_app(app)
    with app.app_context():
        db.create_all()
    try:
        r = app.test_client().post("/api/bitrix/webhook", data={"event": "ONCRMDEALADD", "ts": "1",
                                                                "auth[application_token]": "tok-123456"})
        assert r.status_code == 200
        with app.app_context():
            assert db.session.execute(select(MyEvent.event)).scalar_one() == "ONCRMDEALADD"
    finally:
        with app.app_context():
            db.drop_all()
            db.engine.dispose()


def test_env_fallback_can_be_turned_off(host, portal):
    single = host.app(store=host.mapped_store(), BITRIX_WEBHOOK_BASE=PORTAL_BASE)
    assert single.test_client().get("/api/bitrix/clients/9/config/debug").get_json()["result"]["source"] == \
        "environment"
    many = host.app(store=host.mapped_store(), BITRIX_WEBHOOK_BASE=PORTAL_BASE, BITRIX_ENV_FALLBACK=False)
    c = many.test_client()
    debug = c.get("/api/bitrix/clients/9/config/debug").get_json()["result"]
    assert (debug["source"], debug["env_fallback"]) == ("none", False)
    r = c.get("/api/bitrix/clients/9/contacts")
    assert r.status_code == 400 and r.get_json()["error"] == "CONFIG_MISSING"
    assert "BITRIX_ENV_FALLBACK is off" in r.get_json()["error_description"]
    with many.app_context(), pytest.raises(ConfigMissing):
        bx_call("profile", client_id=9)
    assert len(portal.calls) == 0  # the global portal was never called for client 9


def test_names_a_host_controls(database_url, portal):
    h = Host(database_url, url_prefix="/crm/b24/", blueprint_name="b24", cli_group="b24")
    try:
        app = h.app(store=h.mapped_store(defaults={"slug": "x"}))
        c = app.test_client()
        r = c.get("/crm/b24/clients/1/contacts")
        assert r.status_code == 400 and "POST /crm/b24/clients/1/config" in r.get_json()["error_description"]
        assert c.get("/api/bitrix/clients/1/contacts").status_code == 404
        assert c.post("/crm/b24/clients/1/config", json={"webhook_base": PORTAL_BASE}).status_code == 201
        portal.post(portal_url("crm.deal.add"), json={"result": 7, "time": {}})
        r = c.post("/crm/b24/clients/1/deals", json={"fields": {"TITLE": "x"}})
        assert r.status_code == 201 and r.headers["Location"].endswith("/crm/b24/clients/1/deals/7")
        assert "/crm/b24/openapi.json" in {rule.rule for rule in app.url_map.iter_rules()}
        assert any(rule.endpoint.startswith("b24.") for rule in app.url_map.iter_rules())
        assert app.test_cli_runner().invoke(args=["b24", "setup"]).exit_code == 0
        assert "b24" in app.cli.commands and "bitrix24" not in app.cli.commands
        assert "openapi" not in app.cli.commands  # flask-smorest's group is not added to the host
    finally:
        h.close()


def test_authorize_hook_says_unauthenticated_or_forbidden(host):
    @host.bitrix24.authorize
    def may_use(client_id):
        from flask import request

        user = request.headers.get("X-User-Client")
        return None if user is None else user == str(client_id)

    app = host.app(store=host.mapped_store(), BITRIX_AUTH_DISABLED=False)
    c = app.test_client()
    anonymous = c.get("/api/bitrix/clients/1/config")
    assert anonymous.status_code == 401 and anonymous.get_json()["error"] == "UNAUTHORIZED"
    assert c.get("/api/bitrix/clients/1/config", headers={"X-User-Client": "2"}).status_code == 403
    assert c.get("/api/bitrix/clients/1/config", headers={"X-User-Client": "1"}).status_code == 200
    # the hook sees only ids the views would accept
    assert c.get("/api/bitrix/clients/01/config", headers={"X-User-Client": "1"}).status_code == 400


def test_importing_the_package_touches_no_other_logger():
    code = (
        "import logging\n"
        "def snap():\n"
        "    out = {}\n"
        "    for name, lg in [('', logging.getLogger()), *logging.root.manager.loggerDict.items()]:\n"
        "        if isinstance(lg, logging.Logger):\n"
        "            out[name] = (lg.level, tuple(map(id, lg.handlers)), tuple(map(id, lg.filters)), lg.propagate,\n"
        "                         lg.disabled)\n"
        "    return out\n"
        "import flask, flask_sqlalchemy, sqlalchemy, requests, urllib3, werkzeug\n"
        "before = snap()\n"
        "import flask_bitrix24\n"
        "after = snap()\n"
        "changed = [n for n in before if before[n] != after.get(n)]\n"
        "new = [n for n in after if n not in before and not n.startswith('flask_bitrix24')]\n"
        "print(changed, [n for n in new if logging.getLogger(n).handlers or logging.getLogger(n).level])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] []"


def test_the_package_is_flask_bitrix24_and_never_app():
    code = ("import sys, flask_bitrix24; from flask_bitrix24 import create_app\n"
            "app = create_app({'SQLALCHEMY_DATABASE_URI': 'sqlite://', 'BITRIX_AUTH_DISABLED': True})\n"
            "print(sorted(m for m in sys.modules if m == 'app' or m.startswith('app.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_without_the_metrics_extra_metrics_say_what_to_install(host, monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if the extra was not installed
    app = host.app(store=host.mapped_store(), BITRIX_METRICS_TOKEN="scrape-123456")
    c = app.test_client()
    r = c.get("/api/bitrix/metrics", headers={"Authorization": "Bearer scrape-123456"})
    assert r.status_code == 501 and "flask-bitrix24[metrics]" in r.get_json()["error_description"]
    assert c.get("/api/bitrix/health").status_code == 200  # the rest works


def test_without_the_redis_extra_a_redis_url_fails_at_start_saying_why(host, monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(RuntimeError, match=r"flask-bitrix24\[redis\]"):
        host.app(store=host.mapped_store(), BITRIX_REDIS_URL="redis://127.0.0.1:1/0")


def test_a_bodyless_post_from_a_cross_site_form_is_refused_under_a_cookie_hook(host):
    host.bitrix24.authorize(lambda client_id: True)  # e.g. Flask-Login's session cookie says yes
    app = host.app(store=host.mapped_store(), BITRIX_AUTH_DISABLED=False)
    c = app.test_client()
    r = c.post("/api/bitrix/clients/1/events/1/replay", data="a=1", content_type="application/x-www-form-urlencoded")
    assert r.status_code == 415 and r.get_json()["error"] == "UNSUPPORTED_MEDIA_TYPE"
    assert c.post("/api/bitrix/clients/1/events/1/replay", json={}).status_code == 404  # JSON: reaches the view


def test_the_member_id_goes_to_the_bitrix24_row_only(database_url):
    db = SQLAlchemy()
    ext = Bitrix24(db=db)

    class CRMs(db.Model):
        __tablename__ = "CRMs"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        name: Mapped[str] = mapped_column(String(64))

    class Auth(db.Model):
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        client_id: Mapped[int] = mapped_column(Integer)
        crm_id: Mapped[int] = mapped_column(ForeignKey("CRMs.id"))
        url: Mapped[str | None] = mapped_column(Text)
        token: Mapped[str | None] = mapped_column(String(64))
        domain: Mapped[str | None] = mapped_column(String(255))
        member: Mapped[str | None] = mapped_column(String(64))

    app = Flask("host")
    app.config.update(SQLALCHEMY_DATABASE_URI=database_url, BITRIX_AUTH_DISABLED=True, BITRIX_VERIFY_CONFIG=False)
    db.init_app(app)
    ext.init_app(app, store=ModelStore(Auth, webhook_base="url", outbound_token="token", portal_domain="domain",
                                       member_id="member", crm=CRMRow(CRMs, defaults={})))
    try:
        with app.app_context():
            db.create_all()
            db.session.add_all([CRMs(id=1, name="AmoCRM"), CRMs(id=2, name="Bitrix24")])
            db.session.commit()  # first: no relationship() tells the flush to insert CRMs before Auth
            db.session.add(Auth(client_id=1, crm_id=1, url="https://amo.example/x"))
            db.session.commit()
        c = app.test_client()
        assert c.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE,
                                                             "outbound_token": "tok-1-abcdef"}).status_code == 201
        member = "0123456789abcdef0123456789abcdef"
        r = c.post("/api/bitrix/webhook", data={"event": "ONCRMDEALADD", "ts": "1", "auth[member_id]": member,
                                                "auth[domain]": "b24-test.bitrix24.com",
                                                "auth[application_token]": "tok-1-abcdef"})
        assert r.status_code == 200
        with app.app_context():
            rows = {a.crm_id: (a.member, a.domain) for a in db.session.execute(select(Auth)).scalars()}
        assert rows == {1: (None, None), 2: (member, "b24-test.bitrix24.com")}
        # and the portal is found by member_id alone from now on
        r = c.post("/api/bitrix/webhook", data={"event": "ONCRMDEALADD", "ts": "2", "auth[member_id]": member,
                                                "auth[domain]": "renamed.bitrix24.com",
                                                "auth[application_token]": "tok-1-abcdef"})
        assert r.status_code == 200
    finally:
        with app.app_context():
            db.drop_all()
            db.engine.dispose()


def test_a_missing_crm_row_is_503_with_what_to_do(host):
    app = host.app(store=host.mapped_store())  # defaults=None: we never add the row
    r = app.test_client().post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE})
    assert r.status_code == 503 and r.get_json()["error"] == "SETUP_REQUIRED"
    assert "has no 'Bitrix24' row" in r.get_json()["error_description"]


def test_a_required_host_column_we_cannot_fill_is_named_at_start(host):
    with pytest.raises(ValueError, match=r"ClientCRMAuth\.crm_id"):
        ModelStore(host.ClientCRMAuth, webhook_base="webhook_url", outbound_token="app_token")  # crm= missing


def test_a_refused_write_is_503_and_logs_no_secret(host, caplog):
    app = host.app(store=host.mapped_store(defaults={"slug": "b"}))
    with app.app_context():  # a host constraint we know nothing of
        host.db.session.execute(__import__("sqlalchemy").text(
            'CREATE UNIQUE INDEX uq_token ON "ClientCRMAuth" (app_token)'))
        host.db.session.commit()
    c = app.test_client()
    assert c.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE,
                                                         "outbound_token": "SuperSecretTok42"}).status_code == 201
    r = c.post("/api/bitrix/clients/2/config", json={"webhook_base": PORTAL_BASE, "outbound_token": "SuperSecretTok42"})
    assert r.status_code == 503 and "ClientCRMAuth" in r.get_json()["error_description"]
    assert "SuperSecretTok42" not in r.get_data(as_text=True)
    assert all("SuperSecretTok42" not in rec.getMessage() for rec in caplog.records)
    assert c.get("/api/bitrix/clients/1/config").status_code == 200  # the session is usable again


def test_an_empty_url_prefix_is_refused():
    with pytest.raises(ValueError, match="url_prefix"):
        Bitrix24(url_prefix="/")


def test_every_module_imports_on_its_own():
    code = (
        "import importlib, pkgutil, sys, flask_bitrix24\n"
        "names = [m.name for m in pkgutil.walk_packages(flask_bitrix24.__path__, 'flask_bitrix24.')\n"
        "         if '.migrations' not in m.name]\n"
        "for name in names:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('flask_bitrix24')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) > 30


def test_default_store_without_a_key_outside_debug_says_to_set_one(host, tmp_path):
    # Each machine would make its own key and could not read the others' rows: refused, with the fix.
    app = host.app(TESTING=False, instance_path=str(tmp_path / "instance"))
    r = app.test_client().post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE})
    assert r.status_code == 500 and r.get_json()["error"] == "SECRET_KEY_ERROR"
    assert "BITRIX_SECRET_KEY is not set" in r.get_json()["error_description"]
    assert not (tmp_path / "instance").exists()

    testing = host.app(instance_path=str(tmp_path / "instance"))  # TESTING: a key is made into the instance folder
    assert testing.test_client().post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE}).status_code \
        == 201
    assert (tmp_path / "instance" / "bitrix24_secret.key").exists()


def test_app_mode_in_a_host_keeps_its_client_table_and_adds_only_the_installations(host, portal):
    """With BITRIX_APP_CLIENT_ID the installations table is declared on the host's metadata (its own
    migrations create it); the host's ClientCRMAuth is untouched, and a host view's bx_call for a
    client linked to an installation goes out with the app's token."""
    from .test_app_mode import CLIENT_ID, CLIENT_SECRET, ENDPOINT, MEMBER, FakeOAuth, install_form

    oauth = FakeOAuth(portal)
    # What the install asks while it binds the app's events (the host app runs on real time: unanswered, these
    # would be waited out).
    oauth.rest("feature.get", {"value": "Y"})
    oauth.rest("event.get", [])
    oauth.rest("batch", {"result": {}, "result_error": {}})
    app = host.app(store=host.mapped_store(defaults={"slug": "b"}), BITRIX_APP_CLIENT_ID=CLIENT_ID,
                   BITRIX_APP_CLIENT_SECRET=CLIENT_SECRET, BITRIX_SECRET_KEY=Fernet.generate_key().decode())
    with app.app_context():
        assert "bitrix24_app_installations" in host.db.metadata.tables
        assert "bitrix24_app_installations" in inspect(host.db.engine).get_table_names()
    client = app.test_client()
    assert client.post("/api/bitrix/app/install", data=install_form(oauth)).status_code == 200
    assert client.post("/api/bitrix/clients/1/config", json={"member_id": MEMBER}).status_code in (200, 201)
    seen = oauth.rest("crm.contact.add", 5)
    r = client.post("/my/contacts")
    assert r.status_code == 200 and r.get_json() == 5 and len(seen) == 1
    assert portal.calls[-1].request.url == f"{ENDPOINT}crm.contact.add.json"
    with app.app_context():
        assert host.db.session.execute(select(host.ClientCRMAuth)).first() is None
