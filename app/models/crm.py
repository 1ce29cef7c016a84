"""The CRMs table and per-client CRM credentials."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db

# The Bitrix24 row is found by this name at run time; its id is never written into source files.
BITRIX24_CRM_NAME = "Bitrix24"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CRM(db.Model):
    __tablename__ = "CRMs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)

    def __repr__(self) -> str:
        return f"CRM(id={self.id!r}, name={self.name!r})"


class ClientCRMAuth(db.Model):
    """One row per (client, CRM). ``credentials`` is MultiFernet ciphertext of a JSON object
    (``webhook_base``, ``outbound_token``); ``portal_domain`` stays in clear to route events."""

    __tablename__ = "client_crm_auth"
    __table_args__ = (UniqueConstraint("client_id", "crm_id", name="uq_client_crm_auth_client_crm"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    crm_id: Mapped[int] = mapped_column(ForeignKey("CRMs.id"), nullable=False)
    credentials: Mapped[str] = mapped_column(Text, nullable=False)
    portal_domain: Mapped[str | None] = mapped_column(String(255), index=True)
    member_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(db.DateTime(timezone=True), default=_now, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(
        db.DateTime(timezone=True), default=_now, onupdate=_now, nullable=False
    )

    crm: Mapped[CRM] = relationship()

    def __repr__(self) -> str:  # no credentials, not even encrypted
        return f"ClientCRMAuth(client_id={self.client_id!r}, crm_id={self.crm_id!r}, portal={self.portal_domain!r})"
