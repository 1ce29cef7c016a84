"""Our tables as mixins, so that whichever ``db`` an app gives owns them.

A host composes them into its own ``db.Model`` (to add columns, or to pick the table names); by
default :func:`declare_models` does that on the host's ``db`` when the extension is set up, so the
host's own migrations (``flask db migrate``) see our tables like its own. Nothing here creates a
table: that is the host's migrations' job, or, in the standalone app, our own Alembic branch.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from .status import EventStatus


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite keeps no zone; we only ever store UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


class CRMMixin:
    """A CRMs table (one row per CRM; Bitrix24's is found by name). Only the standalone app has
    one of its own: a host keeps its own table and tells the store about it."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)

    def __repr__(self) -> str:
        return f"CRM(id={self.id!r}, name={self.name!r})"


class ClientConfigMixin:
    """One client's portal connection, for our encrypted store.

    ``credentials`` is MultiFernet ciphertext of a JSON object (``webhook_base``, ``outbound_token``,
    ``rate_limit``); ``portal_domain`` and ``member_id`` stay in clear to route events.
    """

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    credentials: Mapped[str] = mapped_column(Text, nullable=False)
    portal_domain: Mapped[str | None] = mapped_column(String(255), index=True)
    member_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow, nullable=False
    )

    def __repr__(self) -> str:  # no credentials, not even encrypted
        return f"{type(self).__name__}(client_id={self.client_id!r}, portal={self.portal_domain!r})"


class AppInstallationMixin:
    """One installation of our Bitrix24 app on one portal (app mode; see services/installations.py).

    ``member_id`` names the portal for good (it survives a domain change); ``credentials`` is
    MultiFernet ciphertext of the token pair and the application token (empty once uninstalled);
    ``token_version`` grows with every stored pair. ``client_id`` is the host's client linked to it.
    """

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    client_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    domain: Mapped[str | None] = mapped_column(String(255))
    client_endpoint: Mapped[str | None] = mapped_column(String(512))
    credentials: Mapped[str | None] = mapped_column(Text)
    scope: Mapped[str | None] = mapped_column(String(1024))
    # active | uninstalled | needs_attention (``problem`` says why: invalid_grant, PAYMENT_REQUIRED...)
    status: Mapped[str] = mapped_column(String(32), nullable=False, default="active")
    problem: Mapped[str | None] = mapped_column(String(64))
    problem_detail: Mapped[str | None] = mapped_column(Text)
    token_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    installs: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # grows with each (re)install only
    address_checked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))  # a "moved?" refresh
    # The auth_connector our calls and our offline queue use ("" when the plan has none), and the
    # offline batch being drained (reserved with clear=0), kept until it is cleared: a crash loses nothing.
    connector: Mapped[str | None] = mapped_column(String(64))
    offline_process_id: Mapped[str | None] = mapped_column(String(64))
    # One drain at a time per installation, across processes: who drains, until when.
    offline_claim: Mapped[str | None] = mapped_column(String(64))
    offline_claimed_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # A refresh in progress: who holds it and until when (a holder that died frees it at the expiry).
    lease_holder: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    access_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    installed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    refreshed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow, nullable=False
    )

    def __repr__(self) -> str:  # no credentials, not even encrypted
        return f"{type(self).__name__}(member_id={self.member_id!r}, status={self.status!r})"


class SyncStateMixin:
    """Where a tenant's reconciliation of one entity has got to (services/reconcile.py): the newest
    modification time it has seen, when it ran, how many changes nobody announced it found; and, for a
    mirrored entity (services/mirror.py), the first copy's checkpoint, the last ID comparison and the
    claim that keeps two runs of one tenant's entity apart."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(Integer, nullable=False)
    entity: Mapped[str] = mapped_column(String(64), nullable=False)
    cursor: Mapped[str | None] = mapped_column(String(64))  # ISO 8601, as the portal wrote it
    runs: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    unannounced: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_run_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    # The mirror (opt-in per tenant and entity): on, its phase ("copy", then "incremental"), the last ID
    # the first copy stored (it resumes there), when that copy began (the incremental cursor starts there).
    # (Server defaults on the two NOT NULL columns: a host's `flask db migrate` adds them to a table that
    # has rows already.)
    mirror: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    phase: Mapped[str | None] = mapped_column(String(16))
    checkpoint: Mapped[str | None] = mapped_column(String(64))
    copy_started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    copied_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    ids_checked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_success_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    errors: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    claim: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow, nullable=False
    )


class MirrorMixin:
    """A tenant's copy of one entity's records (services/mirror.py), one table per entity: the
    portal's ID, its DATE_MODIFY (in UTC), a deleted flag, and the record as the portal listed it
    (the selected fields, in JSON). ``(client_id, bitrix_id)`` is unique."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(Integer, nullable=False)
    bitrix_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    date_modify: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    data: Mapped[dict] = mapped_column(JSON, nullable=False)
    synced_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class EventLogMixin:
    """The durable log of the events Bitrix24 posted to us (one row per delivery)."""

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
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=EventStatus.RECEIVED, index=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    processed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    def to_dict(self) -> dict[str, Any]:
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
            "received_at": iso(self.received_at),
            "next_attempt_at": iso(self.next_attempt_at),
            "processed_at": iso(self.processed_at),
            "payload": self.payload,
        }
