"""The durable log of events Bitrix24 posted to us."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .crm import _now


class BitrixEvent(db.Model):
    __tablename__ = "bitrix_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int | None] = mapped_column(Integer, index=True)
    portal_domain: Mapped[str | None] = mapped_column(String(255))
    event: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    entity_type: Mapped[str | None] = mapped_column(String(64))
    entity_id: Mapped[str | None] = mapped_column(String(64))
    # The payload as received, minus the application token and any OAuth tokens.
    payload: Mapped[dict] = mapped_column(JSON, nullable=False)
    # Bitrix24 never re-sends, but queues and proxies can: one row per (portal, event, data, ts).
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="received", index=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(db.DateTime(timezone=True), default=_now, nullable=False)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "client_id": self.client_id,
            "portal_domain": self.portal_domain,
            "event": self.event,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "received_at": self.received_at.isoformat() if self.received_at else None,
            "payload": self.payload,
        }
