"""Idempotent setup: our tables and the Bitrix24 row in the CRMs table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from ..extensions import db
from ..models import BITRIX24_CRM_NAME, CRM, BitrixEvent, ClientCRMAuth
from .client_config import bitrix24_crm

OUR_TABLES = [CRM.__table__, ClientCRMAuth.__table__, BitrixEvent.__table__]


@dataclass
class SetupReport:
    tables_created: list[str] = field(default_factory=list)
    crm_created: bool = False
    crm_id: int | None = None

    @property
    def changed(self) -> bool:
        return bool(self.tables_created or self.crm_created)

    def lines(self) -> list[str]:
        out = [f"created table {name}" for name in self.tables_created]
        if self.crm_created:
            out.append(f"added {BITRIX24_CRM_NAME} to the CRMs table (id {self.crm_id})")
        if not out:
            out.append(f"nothing to do: tables exist and {BITRIX24_CRM_NAME} is in the CRMs table (id {self.crm_id})")
        return out


def run_setup() -> SetupReport:
    """Create missing tables and the Bitrix24 CRM row. Needs an app context. Safe to rerun."""
    report = SetupReport()
    existing = set(inspect(db.engine).get_table_names())
    report.tables_created = [t.name for t in OUR_TABLES if t.name not in existing]
    for attempt in range(5):
        try:
            db.metadata.create_all(db.engine, tables=OUR_TABLES, checkfirst=True)
            break
        except (OperationalError, ProgrammingError, IntegrityError):
            # Several workers starting at once: another one created a table between our check and
            # our CREATE. Check again (the others may still be on their way) and go on.
            db.session.rollback()
            if attempt == 4:
                raise
            time.sleep(0.1 * (attempt + 1))
    crm = bitrix24_crm()
    if crm is None:
        crm = bitrix24_crm(create=True)
        report.crm_created = True
    db.session.commit()
    report.crm_id = crm.id
    return report
