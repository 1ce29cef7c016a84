"""Idempotent setup: our tables and the Bitrix24 row in the CRMs table."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from filelock import FileLock
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from ..extensions import db
from ..models import BITRIX24_CRM_NAME, CRM, BitrixEvent, ClientCRMAuth
from .client_config import bitrix24_crm

OUR_TABLES = [CRM.__table__, ClientCRMAuth.__table__, BitrixEvent.__table__]
# Our own Alembic history (app/migrations, branch "bitrix24") in our own version table, so that a
# host app's migrations and its alembic_version stay untouched.
VERSION_TABLE = "bitrix24_alembic_version"
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


@dataclass
class SetupReport:
    tables_created: list[str] = field(default_factory=list)
    migrations: list[str] = field(default_factory=list)
    crm_created: bool = False
    crm_id: int | None = None

    @property
    def changed(self) -> bool:
        return bool(self.tables_created or self.migrations or self.crm_created)

    def lines(self) -> list[str]:
        out = [f"created table {name}" for name in self.tables_created]
        out += [f"applied migrations: {step}" for step in self.migrations]
        if self.crm_created:
            out.append(f"added {BITRIX24_CRM_NAME} to the CRMs table (id {self.crm_id})")
        if not out:
            out.append(f"nothing to do: tables exist and {BITRIX24_CRM_NAME} is in the CRMs table (id {self.crm_id})")
        return out


LOCK_TIMEOUT = 120.0  # seconds a setup waits for another one to finish
# Any fixed 64-bit number: the PostgreSQL advisory lock our setup holds while it runs.
_PG_SETUP_LOCK = 0x42_58_32_34_53_45_54  # "BX24SET"


@contextmanager
def setup_lock(engine: Engine) -> Iterator[None]:
    """Run one setup at a time across processes (gunicorn workers all start by running it).

    PostgreSQL: a session advisory lock. SQLite file: a lock file beside the database (SQLite's own
    locks don't cover the read-check-then-create sequence, and converting a new file to WAL while
    others open it can fail without waiting). Other backends (not supported: SQLite and PostgreSQL
    are) get no lock: run the setup once before starting several workers there.
    """
    url = engine.url
    if url.get_backend_name() == "postgresql":
        with engine.connect() as conn:
            deadline = time.monotonic() + LOCK_TIMEOUT
            while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _PG_SETUP_LOCK}).scalar():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another setup has held the lock for {LOCK_TIMEOUT:.0f} s")
                time.sleep(0.2)
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_SETUP_LOCK})
                conn.commit()
    elif url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" \
            and not url.database.startswith("file:") and os.path.isdir(os.path.dirname(url.database) or "."):
        # (a missing folder: no lock file, and SQLite's own error says what is wrong)
        with FileLock(f"{url.database}.setup-lock", timeout=LOCK_TIMEOUT):
            yield
    else:
        yield


def run_setup() -> SetupReport:
    """Create missing tables and the Bitrix24 CRM row. Needs an app context. Safe to rerun."""
    with setup_lock(db.engine):
        return _run_setup()


# Alembic says "Context impl SQLiteImpl" on every start; our report says what was applied.
if logging.getLogger("alembic").level == logging.NOTSET:
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _alembic_config(connection) -> AlembicConfig:
    config = AlembicConfig(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _revision(connection) -> str | None:
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def _run_setup() -> SetupReport:
    report = SetupReport()
    existing = set(inspect(db.engine).get_table_names())
    report.tables_created = [t.name for t in OUR_TABLES if t.name not in existing]
    with db.engine.connect() as connection:
        before = _revision(connection)
        command.upgrade(_alembic_config(connection), "bitrix24@head")
        connection.commit()
        after = _revision(connection)
    if after != before:
        report.migrations = [after] if before is None else [f"{before} -> {after}"]
    crm = bitrix24_crm()
    if crm is None:
        crm = bitrix24_crm(create=True)
        report.crm_created = True
    db.session.commit()
    report.crm_id = crm.id
    return report
