"""Reconciliation: find the changes nobody told us about.

Pushed events are lost when our app is down or the network is cut, and a webhook client has no
offline queue. So, per tenant and entity, on a schedule: list the records modified since the cursor
(``>=DATE_MODIFY`` less an overlap for late writes and clock drift, walked by ID,
https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-list.html), and for each one
whose change no stored event covers, store a **synthetic** event (``payload["synthetic"]`` says so)
that goes to the same handlers. A change is covered when the event log holds an event of that record
received no earlier than its modification time (less a tolerance). The synthetic event's key is the
record and its modification time, so overlapping runs never store it twice.

Deletions leave no record to list: they come by their events (pushed or offline); comparing ID sets
needs a copy of the portal's IDs, which is the mirror's job (services/mirror.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import select, update

from ..entities import ENTITIES, Entity
from ..models.mixins import utcnow
from ..runtime import runtime
from .errors import Bitrix24Error

log = logging.getLogger("flask_bitrix24")

RECONCILABLE = ("contacts", "deals", "leads", "companies")  # legacy CRM lists with DATE_MODIFY and DATE_CREATE
TOLERANCE = dt.timedelta(seconds=120)  # our clock against the portal's, and a push's way through the queue


@dataclass
class ReconcileReport:
    client_id: int
    entity: str
    listed: int = 0
    unannounced: int = 0
    cursor: str | None = None

    def view(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "entity": self.entity, "listed": self.listed,
                "unannounced": self.unannounced, "cursor": self.cursor}


def _when(value: Any) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _state(client_id: int, entity: str) -> Any:
    rt = runtime()
    model = rt.sync_state_model
    session = rt.session
    # Fresh from the database: our own updates go round the identity map (and a host's session may not
    # expire objects on commit).
    stmt = select(model).where(model.client_id == client_id, model.entity == entity).execution_options(
        populate_existing=True)
    row = session.execute(stmt).scalar_one_or_none()
    if row is None:
        row = model(client_id=client_id, entity=entity, runs=0, unannounced=0)
        session.add(row)
        session.flush()
    return row


def _announced(ent: Entity, client_id: int, record_id: str, modified: dt.datetime) -> bool:
    """Whether a stored event covers this change. Candidates are the record's events received since the
    change (less a tolerance for our clock against the portal's); of those, one whose ``ts`` (the
    portal's own clock, when it raised the event) is earlier than the change is about an earlier one:
    two edits a minute apart, the second event lost, are not taken for one."""
    events = runtime().event_model
    stmt = select(events.payload).where(
        events.client_id == client_id, events.entity_type == ent.type_name, events.entity_id == record_id,
        events.received_at >= (modified - TOLERANCE).astimezone(dt.UTC),  # in UTC, as stored (SQLite keeps no zone)
    ).limit(50)
    for (payload,) in runtime().session.execute(stmt):
        if not isinstance(payload, dict):
            return True
        synthetic = payload.get("synthetic")
        if isinstance(synthetic, dict):  # ours, about the change it names
            about = _when(synthetic.get("modified"))
            if about is None or about >= modified - dt.timedelta(seconds=1):
                return True
            continue
        try:
            if float(payload["ts"]) >= modified.timestamp() - 1:
                return True
        except (KeyError, TypeError, ValueError):
            return True  # no readable time: as before, received after the change is enough
    return False


def reconcile(client_id: int, entity: str, *, fields: list[str] | None = None,
              sink: Callable[[list[Any]], None] | None = None, announce: bool = True,
              state_key: str | None = None) -> ReconcileReport:
    """One run for one tenant and entity: synthetic events for the unannounced changes, cursor moved.

    The mirror (services/mirror.py) walks the same way: ``fields`` are what it selects, ``sink`` gets
    the listed rows 500 at a time, ``announce=False`` stores no synthetic events (nobody asked for
    them: the entity is mirrored, not reconciled), and ``state_key`` keeps its cursor apart.

    The walk goes by ID, so a record it has passed may change again before it ends: the next cursor
    is never later than the moment this walk began (less the overlap, the next run lists it again)."""
    from ..store import portal_domain
    from . import events as events_service
    from .bulk import bx_list_all
    from .client_config import portal_target
    from .offline import _hand_on

    if entity not in RECONCILABLE:
        raise ValueError(f"reconciliation covers {', '.join(RECONCILABLE)}, not {entity!r}")
    rt = runtime()
    if rt.sync_state_model is None:
        raise RuntimeError("reconciliation needs its table: set BITRIX_RECONCILE_ENTITIES or BITRIX_SYNC_ENTITIES "
                           "(or pass sync_state_model)")
    ent = ENTITIES[entity]
    cfg = current_app.config
    report = ReconcileReport(client_id, entity)
    state_name = state_key or entity
    state = _state(client_id, state_name)
    cursor = _when(state.cursor)
    since = (cursor - dt.timedelta(seconds=float(cfg.get("BITRIX_RECONCILE_OVERLAP", 300.0)))) if cursor else \
        utcnow() - dt.timedelta(seconds=float(cfg.get("BITRIX_RECONCILE_LOOKBACK", 3600.0)))
    domain = portal_domain(portal_target(client_id).base)
    # With nothing listed, the next run starts where this one looked from.
    newest, newest_text, new_ids = cursor or since, state.cursor or since.isoformat(timespec="seconds"), []
    wanted = ["ID", "DATE_MODIFY", "DATE_CREATE"]
    params = {"filter": {">=DATE_MODIFY": since.isoformat(timespec="seconds")},
              "select": [*fields, *(f for f in wanted if f not in fields)] if fields else wanted}
    chunk: list[Any] = []
    walk_started = utcnow()
    try:
        for row in bx_list_all(ent.method("list"), params, client_id=client_id, mode="keyset"):
            report.listed += 1
            if sink is not None:
                chunk.append(row)
                if len(chunk) >= 500:
                    sink(chunk)
                    chunk = []
            record_id, modified = str(row.get("ID")), _when(row.get("DATE_MODIFY"))
            if modified is None:
                continue
            if modified > newest:
                newest, newest_text = modified, str(row.get("DATE_MODIFY"))
            if not announce or _announced(ent, client_id, record_id, modified):
                continue
            created = _when(row.get("DATE_CREATE"))
            action = "ADD" if created is not None and abs((modified - created).total_seconds()) <= 1 else "UPDATE"
            payload = {"event": f"{ent.event_prefix}{action}", "data": {"FIELDS": {"ID": record_id}},
                       "ts": str(int(modified.timestamp())), "auth": {"domain": domain},
                       "synthetic": {"reason": "reconciliation", "modified": row.get("DATE_MODIFY")}}
            key = hashlib.sha256(f"reconcile|{client_id}|{entity}|{record_id}|{row.get('DATE_MODIFY')}".encode())
            received, duplicate = events_service.store_pulled_event(
                payload, tenant=client_id, portal_domain=domain, key=key.hexdigest())
            if not duplicate:
                report.unannounced += 1
                new_ids.append(received.id)
        if chunk:
            sink(chunk)  # type: ignore[misc] - only filled when there is a sink
    except Bitrix24Error as exc:
        state = _state(client_id, state_name)
        state.last_error, state.last_run_at = f"{exc.code}: {exc.description}"[:2000], utcnow()
        rt.session.commit()
        raise
    if newest > walk_started:  # rows the walk passed early may have changed since: list them again next time
        newest_text = walk_started.isoformat(timespec="seconds")
    state = _state(client_id, state_name)  # the event stores committed the session
    rt.session.execute(update(rt.sync_state_model).where(rt.sync_state_model.id == state.id).values(
        cursor=newest_text, runs=rt.sync_state_model.runs + 1,
        unannounced=rt.sync_state_model.unannounced + report.unannounced, last_run_at=utcnow(), last_error=None))
    rt.session.commit()
    report.cursor = newest_text
    _hand_on(new_ids)
    if report.unannounced:
        log.warning("bitrix24 reconciliation of client %s %s: %d changes nobody announced", client_id, entity,
                    report.unannounced)
    return report


def entities() -> list[str]:
    setting = str(current_app.config.get("BITRIX_RECONCILE_ENTITIES") or "")
    return [name.strip() for name in setting.split(",") if name.strip() in RECONCILABLE]


def tenants() -> list[int]:
    """The clients to reconcile: those with a saved config and those linked to an app installation."""
    rt = runtime()
    ids = set(getattr(rt.store, "client_ids", lambda: [])())
    if rt.app_mode:
        ids |= {inst.client_id for inst in rt.installations.all()
                if inst.client_id is not None and inst.status == "active"}
    return sorted(ids)


def reconcile_all(client_ids: list[int] | None = None) -> list[ReconcileReport]:
    """Every configured entity of every client (default: ``tenants()``); a failing one is logged and
    the others go on."""
    if client_ids is None:
        client_ids = tenants()
    from . import mirror

    reports = []
    for client_id in client_ids:
        for entity in entities():
            if mirror.enabled(client_id, entity):
                continue  # its mirror's runs walk the same changes and store these events (mirror.sync_all)
            try:
                reports.append(reconcile(client_id, entity))
            except Bitrix24Error as exc:
                log.warning("bitrix24 reconciliation of client %s %s failed: %s", client_id, entity, exc)
    return reports


def run_job(client_id: int, entity: str) -> dict[str, Any] | None:
    """The RQ job of one tenant's entity (queued by the worker's timer); a mirrored one is the mirror's."""
    from . import mirror

    if mirror.enabled(client_id, entity):
        return None
    return reconcile(client_id, entity).view()


__all__ = ["RECONCILABLE", "ReconcileReport", "entities", "reconcile", "reconcile_all", "run_job", "tenants"]
