"""The standalone app's tables, on its own ``db``: the seed's ``CRMs`` and ``client_crm_auth``
(credentials encrypted, tied to the Bitrix24 row of ``CRMs``) and ``bitrix_events``.

Only ``create_app`` imports this module: a host app never gets these classes (its tables are
declared on its own ``db`` by the extension, or are its own models mapped onto a store).
"""

from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from . import mirror_model
from .mixins import AppInstallationMixin, ClientConfigMixin, CRMMixin, EventLogMixin, SyncStateMixin

# The standalone app's own database (``extensions.db`` is this object); created here, with its
# models, so that importing either module first works.
db = SQLAlchemy()

# The Bitrix24 row is found by this name at run time; its id is never written into source files.
BITRIX24_CRM_NAME = "Bitrix24"


class CRM(CRMMixin, db.Model):
    __tablename__ = "CRMs"


class ClientCRMAuth(ClientConfigMixin, db.Model):
    __tablename__ = "client_crm_auth"
    __table_args__ = (UniqueConstraint("client_id", "crm_id", name="uq_client_crm_auth_client_crm"),)

    crm_id: Mapped[int] = mapped_column(ForeignKey("CRMs.id"), nullable=False)
    crm: Mapped[CRM] = relationship()


class BitrixEvent(EventLogMixin, db.Model):
    __tablename__ = "bitrix_events"


class AppInstallation(AppInstallationMixin, db.Model):
    __tablename__ = "bitrix24_app_installations"


class SyncState(SyncStateMixin, db.Model):
    __tablename__ = "bitrix24_sync_state"
    __table_args__ = (UniqueConstraint("client_id", "entity", name="uq_bitrix24_sync_state_client_entity"),)


# The entities services/mirror.py can copy (its MIRRORABLE), each in a table of its own, declared as a host's are.
MIRRORS = {entity: mirror_model(db, entity) for entity in ("contacts", "deals", "leads", "companies")}

OUR_TABLES = [CRM.__table__, ClientCRMAuth.__table__, BitrixEvent.__table__, AppInstallation.__table__,
              SyncState.__table__, *(model.__table__ for model in MIRRORS.values())]
