"""A small host app that adopts flask-bitrix24 the way its README says.

Its package is ``app`` on purpose: our own repository keeps its sources in an ``app/`` directory too,
and the installed ``flask_bitrix24`` must not care.
"""

from __future__ import annotations

import os

from flask import Flask
from flask_bitrix24 import Bitrix24, CRMRow, ModelStore
from flask_login import LoginManager, current_user
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()
migrate = Migrate()
login = LoginManager()
bitrix24 = Bitrix24(db=db)  # made before the models exist; the store is given at init_app


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY", "host-dev-secret"),
        SQLALCHEMY_DATABASE_URI=os.environ.get(
            "HOST_DATABASE_URL", "sqlite:///" + os.path.join(app.instance_path, "host.db")
        ),
    )
    app.config.update(config or {})

    db.init_app(app)
    migrate.init_app(app, db)
    login.init_app(app)

    from . import handlers, models, views  # noqa: F401 - models and handlers register themselves

    app.register_blueprint(views.bp)
    bitrix24.init_app(
        app,
        store=ModelStore(
            models.ClientCRMAuth,
            webhook_base="webhook_url",
            outbound_token="app_token",
            crm=CRMRow(models.CRMs, defaults={"slug": "bitrix24"}),
        ),
    )
    return app


@login.user_loader
def load_user(user_id: str):
    from .models import User

    return db.session.get(User, int(user_id))


@bitrix24.authorize
def may_use_bitrix24(client_id: int | None) -> bool | None:
    if not current_user.is_authenticated:
        return None
    return client_id is not None and current_user.client_id == client_id
