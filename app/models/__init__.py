"""Our tables, declared on whichever Flask-SQLAlchemy ``db`` the app gives (see ``mixins``).

``declare_models(db)`` builds the event log model (and, for the default store, the encrypted
config model) on the host's ``db`` once per ``db`` and table name, so that several apps sharing one
``db`` (tests, app factories) share the classes too, and never declares a table whose name the
host's metadata already holds: a host model of that name wins, and we say so.
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import UniqueConstraint

from .mixins import (
    AppInstallationMixin,
    ClientConfigMixin,
    CRMMixin,
    EventLogMixin,
    MirrorMixin,
    SyncStateMixin,
    iso,
    utcnow,
)
from .status import STATUSES, EventStatus

# Table names a host gets by default: prefixed, so they never meet a host's own "CRMs",
# "ClientCRMAuth" or "client_crm_auth".
DEFAULT_EVENT_TABLE = "bitrix24_events"
DEFAULT_CONFIG_TABLE = "bitrix24_client_configs"
DEFAULT_INSTALLATION_TABLE = "bitrix24_app_installations"
DEFAULT_SYNC_STATE_TABLE = "bitrix24_sync_state"
DEFAULT_MIRROR_TABLE = "bitrix24_mirror_{entity}"  # one per mirrored entity: bitrix24_mirror_contacts, ...

_declared: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], type]] = weakref.WeakKeyDictionary()


class TableNameTaken(RuntimeError):
    """The host's metadata already has a table of the name we were going to declare."""


def _declare(db: Any, kind: str, table: str, build) -> type:
    cache = _declared.setdefault(db, {})
    key = (kind, table)
    if key in cache:
        return cache[key]
    if table in db.metadata.tables:
        how = {
            "event": "pass event_model=<your model, composed from EventLogMixin> or event_table='another_name' "
                     "to Bitrix24()",
            "config": "pass store=EncryptedStore(model=<your model>) or store=EncryptedStore(table='another_name')",
            "installation": "pass installation_model=<your model, composed from AppInstallationMixin> or "
                            "installation_table='another_name' to Bitrix24()",
            "sync": "pass sync_state_model=<your model, composed from SyncStateMixin> to Bitrix24()",
            "mirror": "pass mirror_models={'<entity>': <your model, composed from MirrorMixin>} to Bitrix24()",
        }[kind]
        raise TableNameTaken(f"the app's database already has a model for table {table!r}: {how}")
    cache[key] = build()
    return cache[key]


def event_model(db: Any, table: str = DEFAULT_EVENT_TABLE) -> type:
    """The event log model on ``db`` (declared the first time, then reused)."""

    def build() -> type:
        return type("Bitrix24Event", (EventLogMixin, db.Model), {"__tablename__": table})

    return _declare(db, "event", table, build)


def config_model(db: Any, table: str = DEFAULT_CONFIG_TABLE) -> type:
    """Our encrypted per-client config model on ``db`` (one row per client)."""

    def build() -> type:
        return type(
            "Bitrix24ClientConfig",
            (ClientConfigMixin, db.Model),
            {"__tablename__": table, "__table_args__": (UniqueConstraint("client_id", name=f"uq_{table}_client"),)},
        )

    return _declare(db, "config", table, build)


def installation_model(db: Any, table: str = DEFAULT_INSTALLATION_TABLE) -> type:
    """The app installations model on ``db`` (app mode only: declared when BITRIX_APP_CLIENT_ID is set)."""

    def build() -> type:
        return type("Bitrix24AppInstallation", (AppInstallationMixin, db.Model), {"__tablename__": table})

    return _declare(db, "installation", table, build)


def sync_state_model(db: Any, table: str = DEFAULT_SYNC_STATE_TABLE) -> type:
    """Reconciliation cursors on ``db`` (declared only when BITRIX_RECONCILE_ENTITIES is set)."""

    def build() -> type:
        return type("Bitrix24SyncState", (SyncStateMixin, db.Model), {
            "__tablename__": table,
            "__table_args__": (UniqueConstraint("client_id", "entity", name=f"uq_{table}_client_entity"),)})

    return _declare(db, "sync", table, build)


def mirror_model(db: Any, entity: str, table: str | None = None) -> type:
    """One entity's mirror on ``db`` (declared only for the entities in BITRIX_SYNC_ENTITIES)."""
    table = table or DEFAULT_MIRROR_TABLE.format(entity=entity)

    def build() -> type:
        name = "Bitrix24Mirror" + entity.title().replace("_", "")
        return type(name, (MirrorMixin, db.Model), {
            "__tablename__": table,
            "__table_args__": (UniqueConstraint("client_id", "bitrix_id", name=f"uq_{table}_client_record"),)})

    return _declare(db, "mirror", table, build)


__all__ = [
    "AppInstallationMixin",
    "CRMMixin",
    "ClientConfigMixin",
    "DEFAULT_CONFIG_TABLE",
    "DEFAULT_EVENT_TABLE",
    "DEFAULT_INSTALLATION_TABLE",
    "DEFAULT_MIRROR_TABLE",
    "DEFAULT_SYNC_STATE_TABLE",
    "EventLogMixin",
    "EventStatus",
    "MirrorMixin",
    "STATUSES",
    "SyncStateMixin",
    "TableNameTaken",
    "config_model",
    "event_model",
    "installation_model",
    "mirror_model",
    "sync_state_model",
    "iso",
    "utcnow",
]
