"""App factory, extension, setup script and CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_bitrix24 import Bitrix24, create_app, runtime
from flask_bitrix24.extensions import db
from flask_bitrix24.models.standalone import CRM, OUR_TABLES
from flask_bitrix24.services.setup import run_setup

OUR_NAMES = {t.name for t in OUR_TABLES}
HEAD = "0004_mirror"  # the newest of our migrations

ROOT = Path(__file__).resolve().parent.parent


def test_setup_script_is_idempotent(tmp_path, secret_key):
    url = f"sqlite:///{tmp_path / 'setup.db'}"
    env = {"PATH": "/usr/bin:/bin", "BITRIX_SECRET_KEY": secret_key, "HOME": str(tmp_path)}
    cmd = [sys.executable, "setup_bitrix24_crm.py", "--database-url", url]
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "created table client_crm_auth" in first.stdout
    assert "added Bitrix24 to the CRMs table" in first.stdout
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0
    assert second.stdout.startswith("nothing to do")
    assert "created" not in second.stdout and "added" not in second.stdout


def test_setup_script_reports_failure_without_traceback(tmp_path, secret_key):
    env = {"PATH": "/usr/bin:/bin", "BITRIX_SECRET_KEY": secret_key}
    result = subprocess.run(
        [sys.executable, "setup_bitrix24_crm.py", "--database-url", "sqlite:////nonexistent-dir/x/y.db"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


def test_flask_cli_setup(make_app):
    app = make_app(BITRIX_AUTO_SETUP=False)
    runner = app.test_cli_runner()
    first = runner.invoke(args=["bitrix24", "setup"])
    assert first.exit_code == 0 and "added Bitrix24" in first.output
    again = runner.invoke(args=["bitrix24", "setup"])
    assert again.exit_code == 0 and "nothing to do" in again.output
    with app.app_context():
        assert db.session.query(CRM).filter_by(name="Bitrix24").count() == 1


def test_generate_key_cli(runner):
    from cryptography.fernet import Fernet

    result = runner.invoke(args=["bitrix24", "generate-key"])
    Fernet(result.output.strip().encode())  # a usable key


def test_crm_row_id_is_looked_up_not_hard_coded(make_app):
    # Another CRM row first: Bitrix24 gets a different id and everything still works.
    app = make_app(BITRIX_AUTO_SETUP=False)
    with app.app_context():
        db.create_all()
        db.session.add(CRM(name="HubSpot"))
        db.session.commit()
        from flask_bitrix24.services.setup import run_setup

        report = run_setup()
        assert report.crm_id == 2
    c = app.test_client()
    assert c.post("/api/bitrix/clients/1/config", json={"webhook_base": "https://a.bitrix24.com/rest/1/abc/"}).status_code == 201
    assert c.get("/api/bitrix/clients/1/config/debug").get_json()["result"]["crm"] == {"id": 2, "name": "Bitrix24"}


def test_two_apps_in_one_process_are_independent(make_app, tmp_path):
    a = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'a.db'}", BITRIX_API_KEY="key-a", BITRIX_AUTH_DISABLED=False)
    b = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'b.db'}", BITRIX_API_KEY="key-b", BITRIX_AUTH_DISABLED=False)
    ca, cb = a.test_client(), b.test_client()
    r = ca.post("/api/bitrix/clients/1/config", json={"webhook_base": "https://a.bitrix24.com/rest/1/abc/"},
                headers={"Authorization": "Bearer key-a"})
    assert r.status_code == 201
    assert cb.get("/api/bitrix/clients/1/config", headers={"Authorization": "Bearer key-a"}).status_code == 401
    r = cb.get("/api/bitrix/clients/1/config", headers={"Authorization": "Bearer key-b"})
    assert r.get_json()["result"]["source"] == "none"
    assert a.extensions["bitrix24"] is not b.extensions["bitrix24"]


def test_extension_in_a_host_app_keeps_host_error_pages(tmp_path, secret_key):
    host = Flask("host")
    host.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'h.db'}", BITRIX_SECRET_KEY=secret_key,
                       BITRIX_AUTH_DISABLED=True)

    @host.route("/boom")
    def boom():
        raise ValueError("host error")

    ext = Bitrix24(host)  # no db of the host's: the extension brings its own, on SQLALCHEMY_DATABASE_URI
    with host.app_context():
        runtime(host).db.create_all()
    c = host.test_client()
    assert c.get("/no-such-page").content_type.startswith("text/html")  # the host's 404 page
    assert c.get("/api/bitrix/no-such-page").is_json
    host.config["PROPAGATE_EXCEPTIONS"] = False
    assert c.get("/boom").status_code == 500 and not c.get("/boom").is_json
    with pytest.raises(RuntimeError, match="already registered"):
        ext.init_app(host)


def test_flask_app_run_entry_point(tmp_path, secret_key):
    # `flask --app app routes` imports the app the way `flask --app app run` does.
    env = {"PATH": "/usr/bin:/bin", "BITRIX_SECRET_KEY": secret_key,
           "DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}"}
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "routes"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "/api/bitrix/clients/<bx_id:client_id>/config" in result.stdout


def test_create_app_config_overrides_environment(monkeypatch, tmp_path, secret_key):
    monkeypatch.setenv("BITRIX_API_KEY", "from-env")
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'o.db'}", "BITRIX_SECRET_KEY": secret_key})
    assert app.extensions["bitrix24"].api_keys == ("from-env",)
    app2 = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'o2.db'}", "BITRIX_SECRET_KEY": secret_key,
                       "BITRIX_API_KEY": "override"})
    assert app2.extensions["bitrix24"].api_keys == ("override",)


def test_workers_starting_together_on_a_new_database(tmp_path, secret_key):
    """Several processes (gunicorn workers) run the auto-setup on the same new database at once."""
    code = "from flask_bitrix24 import create_app; create_app(); print('ok')"
    for round_ in range(3):  # a race: give it several chances to show
        env = {"PATH": "/usr/bin:/bin", "BITRIX_SECRET_KEY": secret_key,
               "DATABASE_URL": f"sqlite:///{tmp_path / f'race{round_}.db'}"}
        procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
        outcomes = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), [err[-600:] for _, err in outcomes if err]


def _tables(app) -> set[str]:
    with app.app_context():
        return set(sa.inspect(db.engine).get_table_names())


def test_setup_applies_our_migrations_in_their_own_version_table(make_app):
    """Our history is its own branch in bitrix24_alembic_version: the host's alembic_version is not touched."""
    app = make_app(BITRIX_AUTO_SETUP=False)
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
            conn.execute(sa.text("INSERT INTO alembic_version VALUES ('host_rev_42')"))
        report = run_setup()
        assert report.migrations == [HEAD] and f"applied migrations: {HEAD}" in report.lines()
        with db.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM bitrix24_alembic_version")).scalar() == HEAD
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "host_rev_42"
        again = run_setup()
        assert not again.changed and again.lines()[0].startswith("nothing to do")
    assert {"CRMs", "client_crm_auth", "bitrix_events", "bitrix24_app_installations", "bitrix24_sync_state",
            "bitrix24_alembic_version"} <= _tables(app)


def test_an_install_at_the_first_revision_gets_the_installations_table(make_app):
    """A database set up before app mode existed (at 0001_initial) is brought to the head: the
    installations table is added, the rows already there are kept."""
    from alembic import command
    from flask_bitrix24.services.setup import _alembic_config

    app = make_app(BITRIX_AUTO_SETUP=False)
    with app.app_context():
        with db.engine.connect() as conn:
            command.upgrade(_alembic_config(conn), "0001_initial")
            conn.commit()
        assert "bitrix24_app_installations" not in _tables(app)
        db.session.add(CRM(name="Bitrix24"))
        db.session.commit()
        report = run_setup()
        assert report.migrations == [f"0001_initial -> {HEAD}"]
        assert "bitrix24_app_installations" in _tables(app) and db.session.query(CRM).count() == 1


def test_models_and_migrations_agree(make_app):
    """What the migrations build is what the models describe (autogenerate finds nothing to do)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    app = make_app(BITRIX_AUTO_SETUP=False)
    with app.app_context():
        run_setup()
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={
                "include_object": lambda obj, name, type_, *_: type_ != "table" or name in OUR_NAMES,
                "compare_type": True})
            diff = compare_metadata(context, db.metadata)
    assert diff == []


def test_setup_adopts_an_install_made_before_migrations(make_app):
    """Tables made by an earlier version (create_all, no version table) are kept with their rows."""
    app = make_app(BITRIX_AUTO_SETUP=False)
    with app.app_context():
        db.metadata.create_all(db.engine, tables=OUR_TABLES)
        db.session.add(CRM(name="Bitrix24"))
        db.session.commit()
        report = run_setup()
        assert report.tables_created == [] and report.migrations == [HEAD] and not report.crm_created
        assert db.session.query(CRM).count() == 1


def test_flask_migrate_sees_our_history(tmp_path, secret_key):
    env = {"PATH": "/usr/bin:/bin", "BITRIX_SECRET_KEY": secret_key, "DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}"}
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", "current"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"{HEAD} (head)" in result.stdout
