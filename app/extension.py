"""The ``Bitrix24`` Flask extension: ``Bitrix24(app)`` or ``bitrix24.init_app(app)``.

``init_app`` registers the blueprint (its JSON error handlers are the blueprint's own: the host's
error pages stay the host's), its OpenAPI document, the CLI group and the config defaults, and keeps
one :class:`~flask_bitrix24.runtime.Runtime` per app in ``app.extensions["bitrix24"]``. One
extension object can serve several apps; it never holds an app.

With the host's ``db`` our queries run in the host's session and our tables are declared on its
metadata, so the host's ``flask db migrate`` creates and tracks them. Nothing is created in the
database here: that is the host's migrations' job (or, in the standalone app, ours).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask

from .hooks import AuthorizeHook, EventHandler, Hooks
from .models import DEFAULT_EVENT_TABLE, DEFAULT_INSTALLATION_TABLE
from .runtime import EXTENSION_KEY, Runtime
from .store import ConfigStore, EncryptedStore

log = logging.getLogger("flask_bitrix24")


class Bitrix24:
    """The extension.

    :param app: an app to set up now (else call :meth:`init_app` later, once per app).
    :param db: the host's Flask-SQLAlchemy instance; default: the one registered on the app, or our
        own when the app has none (then ``SQLALCHEMY_DATABASE_URI`` names the database).
    :param store: where client configs live (:class:`~flask_bitrix24.store.ConfigStore`); default
        :class:`~flask_bitrix24.store.EncryptedStore` on table ``bitrix24_client_configs``.
    :param event_model: the event log model (a host model composed from ``EventLogMixin``); default
        one declared on ``db`` as ``event_table``.
    :param authorize: ``hook(client_id) -> True | False | None`` (see :meth:`authorize`).
    :param url_prefix: where the API is mounted (default ``/api/bitrix``).
    :param blueprint_name: the blueprint's name, hence its endpoints' (``bitrix24.get_record``).
    :param cli_group: the name of the ``flask <group> ...`` commands.
    :param installation_model: app mode's installations model (a host model composed from
        ``AppInstallationMixin``); default: one declared on ``db`` as ``installation_table``, and only
        when ``BITRIX_APP_CLIENT_ID`` is set, so a host without app mode gets no new table.
    :param sync_state_model: reconciliation cursors (``SyncStateMixin``); default: declared on ``db`` as
        ``bitrix24_sync_state`` only when ``BITRIX_RECONCILE_ENTITIES`` or ``BITRIX_SYNC_ENTITIES`` is set.
    :param mirror_models: the mirror's tables, ``{"contacts": <a model composed from MirrorMixin>, ...}``;
        default: one declared on ``db`` per entity of ``BITRIX_SYNC_ENTITIES`` (``bitrix24_mirror_contacts``,
        ...), none without that setting.
    :param own_migrations: the standalone app's switch: setup applies our own Alembic branch.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        db: Any = None,
        store: ConfigStore | None = None,
        event_model: type | None = None,
        event_table: str = DEFAULT_EVENT_TABLE,
        authorize: AuthorizeHook | None = None,
        url_prefix: str = "/api/bitrix",
        blueprint_name: str = "bitrix24",
        cli_group: str = "bitrix24",
        own_migrations: bool = False,
        installation_model: type | None = None,
        installation_table: str = DEFAULT_INSTALLATION_TABLE,
        sync_state_model: type | None = None,
        mirror_models: dict[str, type] | None = None,
    ) -> None:
        self.db, self.store, self.event_model, self.event_table = db, store, event_model, event_table
        self.installation_model, self.installation_table = installation_model, installation_table
        self.sync_state_model = sync_state_model
        self.mirror_models = dict(mirror_models or {})
        if not url_prefix.strip("/"):
            # At the root our JSON catch-all would answer for every unknown URL of the host.
            raise ValueError("url_prefix must name a path under which the API lives, like '/api/bitrix'")
        self.url_prefix = "/" + url_prefix.strip("/")
        self.blueprint_name, self.cli_group, self.own_migrations = blueprint_name, cli_group, own_migrations
        self.hooks = Hooks(authorize)
        if app is not None:
            self.init_app(app)

    # -- host hooks ------------------------------------------------------------------------------

    def on(self, event_name: str) -> Callable[[EventHandler], EventHandler]:
        """Decorator: ``@bitrix24.on("ONCRMDEALUPDATE")`` (or ``"*"`` for every event) registers a
        handler that receives a :class:`~flask_bitrix24.Event`. A handler that raises is retried with
        backoff (``BITRIX_EVENT_MAX_ATTEMPTS``), then the event is kept as failed with its error.
        Handlers run inside an app context: inline after the answer to Bitrix24, or in the worker."""
        if not event_name.strip():
            raise ValueError("an event name, or '*' for every event")

        def register(handler: EventHandler) -> EventHandler:
            self.hooks.add_handler(event_name, handler)
            return handler

        return register

    def handlers_for(self, event_name: str) -> list[EventHandler]:
        return self.hooks.handlers_for(event_name)

    def authorize(self, hook: AuthorizeHook) -> AuthorizeHook:
        """Decorator: ``hook(client_id)`` decides who may use the API, instead of ``BITRIX_API_KEY``.

        It runs in the request (``flask.request``, Flask-Login's ``current_user`` are there) with the
        path's client id already parsed (``None`` on routes without one). Return ``True`` to allow,
        ``False`` for 403 (signed in, not allowed), ``None`` for 401 (nobody signed in).
        """
        self.hooks.authorize = hook
        return hook

    @property
    def blueprint(self):
        """Our blueprint object, e.g. for Flask-WTF: ``csrf.exempt(bitrix24.blueprint)`` (Bitrix24's
        event posts carry no CSRF token; our JSON endpoints need ``application/json`` instead)."""
        from .routes.bitrix24_routes import bp

        return bp

    # -- setup -----------------------------------------------------------------------------------

    def init_app(self, app: Flask, *, store: ConfigStore | None = None, event_model: type | None = None) -> None:
        """Set the extension up on ``app``. ``store`` and ``event_model`` override the constructor's
        (a host whose models are imported after the extension object is made passes them here)."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("the Bitrix24 extension is already registered on this app")
        from .cli import bitrix24_cli
        from .config import bitrix24_settings
        from .controllers.openapi import init_api
        from .logs import install_on_our_loggers
        from .models import event_model as declare_event_model
        from .models import installation_model as declare_installation_model
        from .models import mirror_model as declare_mirror_model
        from .models import sync_state_model as declare_sync_state_model
        from .routes.bitrix24_routes import bp

        for key, value in bitrix24_settings().items():
            app.config.setdefault(key, value)
        db = self._database(app)
        chosen = store or self.store or EncryptedStore()
        chosen.bind(db)
        events = event_model or self.event_model or declare_event_model(db, self.event_table)
        installations = self.installation_model
        if installations is None and str(app.config.get("BITRIX_APP_CLIENT_ID") or "").strip():
            installations = declare_installation_model(db, self.installation_table)
        from .services.mirror import configured_entities

        mirrored = configured_entities(app.config)
        sync_state = self.sync_state_model
        if sync_state is None and (str(app.config.get("BITRIX_RECONCILE_ENTITIES") or "").strip() or mirrored):
            sync_state = declare_sync_state_model(db)
        mirrors = {entity: self.mirror_models.get(entity) or declare_mirror_model(db, entity) for entity in mirrored}
        if installations is not None and str(app.config.get("BITRIX_APP_CLIENT_ID") or "").strip():
            from .services.offline import on_offline_event

            # The portal says offline records wait: drain them (inline after the answer, or in the worker).
            if on_offline_event not in self.hooks.handlers_for("ONOFFLINEEVENT"):
                self.hooks.add_handler("ONOFFLINEEVENT", on_offline_event)
        app.extensions[EXTENSION_KEY] = Runtime(
            app, db=db, store=chosen, event_model=events, hooks=self.hooks, blueprint_name=self.blueprint_name,
            url_prefix=self.url_prefix, own_migrations=self.own_migrations, cli_group=self.cli_group,
            installation_model=installations, sync_state_model=sync_state, mirror_models=mirrors,
        )
        install_on_our_loggers()  # request id, tenant and redaction on our own log lines
        init_api(app, bp, self.url_prefix, name=self.blueprint_name)
        app.cli.add_command(bitrix24_cli, name=self.cli_group)

    def _database(self, app: Flask) -> Any:
        registered = app.extensions.get("sqlalchemy")
        if self.db is not None:
            if registered is not None and registered is not self.db:
                raise RuntimeError(
                    "Bitrix24(db=...) is not the SQLAlchemy instance registered on this app: pass the app's own db"
                )
            return self.db
        if registered is not None:
            return registered
        # No database of the app's: our own, on SQLALCHEMY_DATABASE_URI (one per extension object).
        from flask_sqlalchemy import SQLAlchemy

        if getattr(self, "_own_db", None) is None:
            self._own_db = SQLAlchemy()
        self._own_db.init_app(app)
        return self._own_db


__all__ = ["Bitrix24"]
