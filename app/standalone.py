"""The standalone app: what ``make run``, ``flask --app app run`` and gunicorn serve."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import event

from .config import app_settings
from .extensions import bitrix24, db
from .logs import configure_standalone


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app. ``config`` overrides settings read from the environment (tests use it).

    Reads DATABASE_URL and every BITRIX_* variable (see ``config.py``). Applies our migrations and
    adds the Bitrix24 CRM row on start unless ``BITRIX_AUTO_SETUP`` is False (the setup is
    idempotent).
    """
    app = Flask(__name__, instance_relative_config=True)
    app.config.update(app_settings())
    app.config["BITRIX_AUTO_SETUP"] = True
    if config:
        app.config.update(config)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///bitrix24.db"  # in the instance folder
    configure_standalone(str(app.config.get("BITRIX_LOG_FORMAT", "text")).lower())

    # A pooled connection that died with a database restart is noticed and replaced before use.
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {}).setdefault("pool_pre_ping", True)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        # Concurrent writers (several workers receiving events) wait for the lock instead of failing.
        options = app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})
        options.setdefault("connect_args", {}).setdefault("timeout", 30)
    db.init_app(app)
    bitrix24.init_app(app)
    try:
        # `flask --app app db ...` for writing this repo's own migrations (the `standalone` extra).
        from flask_migrate import Migrate
    except ImportError:
        pass
    else:
        from .services.setup import MIGRATIONS

        Migrate(app, db, directory=str(MIGRATIONS))
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        with app.app_context():
            event.listen(db.engine, "connect", _sqlite_pragmas)

    if app.config["BITRIX_AUTO_SETUP"]:
        from .services.setup import run_setup

        with app.app_context():
            run_setup()
    return app


def _sqlite_pragmas(connection, _record) -> None:
    # WAL lets readers work while one process writes; busy_timeout makes writers queue.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
