"""Idempotent setup: the tables and the Bitrix24 row in the CRMs table.

- The standalone app (``own_migrations``) applies our own Alembic branch (``migrations/``, branch
  ``bitrix24``, version table ``bitrix24_alembic_version``) under a cross-process lock, then adds
  the Bitrix24 CRM row.
- In a host app our tables are the host's migrations' job, so setup only checks that they are there
  (and says how to add them when they are not) and adds the CRMs row when the store says how.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from ..runtime import runtime

# Our own Alembic history, for the standalone app only.
VERSION_TABLE = "bitrix24_alembic_version"
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


class SetupIncomplete(RuntimeError):
    """Setup found something only the host can fix (missing tables, a CRMs row it cannot add)."""


@dataclass
class SetupReport:
    tables_created: list[str] = field(default_factory=list)
    migrations: list[str] = field(default_factory=list)
    crm_created: bool = False
    crm_id: int | None = None
    crm_name: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.tables_created or self.migrations or self.crm_created)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [f"created table {name}" for name in self.tables_created]
        out += [f"applied migrations: {step}" for step in self.migrations]
        if self.crm_created:
            out.append(f"added {self.crm_name} to the CRMs table (id {self.crm_id})")
        out += [f"to do: {problem}" for problem in self.problems]
        if not out:
            crm = f" and {self.crm_name} is in the CRMs table (id {self.crm_id})" if self.crm_id is not None else ""
            out.append(f"nothing to do: the tables exist{crm}")
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
        try:
            from filelock import FileLock
        except ImportError:
            raise SetupIncomplete(
                "the standalone app's setup on SQLite needs filelock: pip install 'flask-bitrix24[standalone]'"
            ) from None

        with FileLock(f"{url.database}.setup-lock", timeout=LOCK_TIMEOUT):
            yield
    else:
        yield


def run_setup() -> SetupReport:
    """Our migrations (standalone) or a check of the host's tables, then the CRMs row. Needs an
    app context. Safe to rerun; ``report.problems`` lists what only the host can fix."""
    rt = runtime()
    if rt.own_migrations:
        with setup_lock(rt.db.engine):
            report = _apply_own_migrations()
    else:
        report = _check_host_tables()
    if report.ok:
        _ensure_crm(report)
    return report


def our_tables() -> list:
    rt = runtime()
    return [*rt.store.tables(), rt.event_model.__table__, *rt.feature_tables()]


def _check_host_tables() -> SetupReport:
    report = SetupReport()
    db = runtime().db
    missing, short = [], []
    for table in our_tables():
        # Each table on its own bind's engine, in its own schema.
        engine = db.engines.get(table.info.get("bind_key")) or db.engine
        inspector = inspect(engine)
        if not inspector.has_table(table.name, schema=table.schema):
            missing.append(table.fullname)
            continue
        # A table from an earlier version of ours may lack columns a newer one added.
        have = {c["name"] for c in inspector.get_columns(table.name, schema=table.schema)}
        lacking = sorted(c.name for c in table.columns if c.name not in have)
        if lacking:
            short.append(f"{table.fullname} ({', '.join(lacking)})")
    missing.sort()
    if missing:
        report.problems.append(
            f"table(s) {', '.join(missing)} missing: they are declared on your db's metadata, so "
            "`flask db migrate` then `flask db upgrade` add them (or db.create_all() in tests)"
        )
    if short:
        report.problems.append(
            f"column(s) missing in {'; '.join(sorted(short))}: a newer version of flask-bitrix24 added them; "
            "`flask db migrate` then `flask db upgrade` add them"
        )
    return report


def _ensure_crm(report: SetupReport) -> None:
    rt = runtime()
    added, crm_id, problem = rt.store.ensure_crm()
    crm = getattr(rt.store, "crm", None)
    report.crm_created, report.crm_id = added, crm_id
    report.crm_name = crm.name if crm is not None else None
    if problem:
        report.problems.append(problem)


def _alembic_config(connection):
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes["target_metadata"] = runtime().db.metadata
    config.attributes["tables"] = {t.name for t in our_tables()}
    return config


def _revision(connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def _apply_own_migrations() -> SetupReport:
    try:
        from alembic import command
    except ImportError:
        raise SetupIncomplete(
            "the standalone app's migrations need Alembic: pip install 'flask-bitrix24[standalone]'"
        ) from None
    rt = runtime()
    report = SetupReport()
    existing = set(inspect(rt.db.engine).get_table_names())
    report.tables_created = [t.name for t in our_tables() if t.name not in existing]
    with rt.db.engine.connect() as connection:
        before = _revision(connection)
        command.upgrade(_alembic_config(connection), "bitrix24@head")
        connection.commit()
        after = _revision(connection)
    if after != before:
        report.migrations = [after] if before is None else [f"{before} -> {after}"]
    return report
