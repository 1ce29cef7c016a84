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
    # received -> (queued ->) processing -> done | retry (-> processing ...) | failed
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="received", index=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(db.DateTime(timezone=True), default=_now, nullable=False)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(db.DateTime(timezone=True), index=True)
    processed_at: Mapped[dt.datetime | None] = mapped_column(db.DateTime(timezone=True))

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
            "received_at": _iso(self.received_at),
            "next_attempt_at": _iso(self.next_attempt_at),
            "processed_at": _iso(self.processed_at),
            "payload": self.payload,
        }


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite keeps no zone; we only ever store UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()
