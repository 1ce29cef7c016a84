"""The mirror: a copy of a tenant's CRM records in the host's database, kept up to date.

Opt-in per entity (``BITRIX_SYNC_ENTITIES``: which entities get a table) and per tenant
(``flask bitrix24 sync <entity> --client N`` turns it on). One table per entity
(``bitrix24_mirror_contacts``, ...): the portal's ID, DATE_MODIFY, a deleted flag and the record as
the portal listed it (every field: ``*``, ``UF_*`` and the multi-fields, as an export takes them).

How it fills and stays true:

1. **First copy**, walked by ID (keyset pages, https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-list.html
   and https://apidocs.bitrix24.com/settings/performance/huge-data.html), stored 500 rows at a time with
   the last stored ID as a checkpoint: a killed copy resumes there.
2. **Events**: ``ONCRM<ENTITY>ADD/UPDATE`` read the record again and store it, ``...DELETE`` marks it
   deleted (pushed, offline or replayed; they go through the event log like any other event).
3. **Incremental runs** list what changed since the cursor (``>=DATE_MODIFY`` less an overlap, the same
   walk as reconciliation, services/reconcile.py), so a lost event is caught within one run.
4. **ID comparison** (every ``BITRIX_SYNC_ID_CHECK_SECONDS``): every ID the portal lists against the
   mirror's. A deletion whose event was lost leaves nothing to list by date; the portal offers no
   "deleted since" query for these entities, so this is the only way to see it.

A write never goes backwards: a row is replaced only by one modified no earlier (a slow listing cannot
undo a newer event), and a deleted row comes back only if the portal shows it modified later (restored
from the recycle bin) or the ID comparison sees it. Two runs of one tenant's entity never overlap (a
claim in its sync-state row). Everything is read with ``background=True``: the portal's bucket keeps
room for interactive calls.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy import and_, bindparam, func, or_, select, update

from ..entities import ENTITIES, Entity
from ..models.mixins import iso, utcnow
from ..runtime import runtime
from .errors import Bitrix24Error

log = logging.getLogger("flask_bitrix24")

MIRRORABLE = ("contacts", "deals", "leads", "companies")  # legacy CRM lists: DATE_MODIFY, ID order, events
CHUNK = 500  # rows stored (and checkpointed) per transaction
CLAIM_SECONDS = 900  # a run that has not renewed its claim for this long has died
PHASE_COPY, PHASE_INCREMENTAL = "copy", "incremental"


class MirrorUnavailable(RuntimeError):
    """The mirror is not set up for this entity (BITRIX_SYNC_ENTITIES), or not on for this tenant."""


def configured_entities(config: Mapping[str, Any]) -> list[str]:
    """The entities ``BITRIX_SYNC_ENTITIES`` names; an unknown name fails at start, not at 3 a.m."""
    names = [n.strip().lower() for n in str(config.get("BITRIX_SYNC_ENTITIES") or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in MIRRORABLE]
    if unknown:
        raise ValueError(f"BITRIX_SYNC_ENTITIES: cannot mirror {', '.join(unknown)} (only {', '.join(MIRRORABLE)})")
    return list(dict.fromkeys(names))


def _utc(value: Any) -> dt.datetime | None:
    """The portal's DATE_MODIFY (ISO 8601 with its offset) in UTC; None when absent or unreadable."""
    if isinstance(value, dt.datetime):
        when = value
    else:
        try:
            when = dt.datetime.fromisoformat(str(value))
        except (TypeError, ValueError):
            return None
    return (when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def _model(entity: str) -> type:
    model = runtime().mirror_models.get(entity)
    if model is None:
        raise MirrorUnavailable(f"{entity} is not mirrored: add it to BITRIX_SYNC_ENTITIES (one of "
                                f"{', '.join(MIRRORABLE)}) and give the mirror its table")
    return model


# -- writing rows --------------------------------------------------------------------------------


def store_rows(entity: str, client_id: int, rows: Iterable[Mapping[str, Any]], *, force: bool = False) -> int:
    """Store listed records (insert, or replace a row modified no later); ``force`` also brings back
    rows marked deleted (the portal has just shown them). Commits; returns how many rows were written.

    A row another process inserts between our read and our insert is not an error: new rows go in with
    ``ON CONFLICT DO NOTHING`` (PostgreSQL, SQLite; ``INSERT IGNORE`` on MySQL), and those that met one are
    then compared and replaced like any stored row. Nothing is ever rolled back here."""
    model = _model(entity)
    table = model.__table__
    session = runtime().session
    now = utcnow()
    by_id: dict[int, tuple[Mapping[str, Any], dt.datetime | None]] = {}
    for row in rows:
        by_id[int(row["ID"])] = (row, _utc(row.get("DATE_MODIFY")))
    if not by_id:
        return 0
    written = 0
    for _ in range(2):  # a second pass only over rows another writer inserted between our read and our insert
        existing = _stored(model, client_id, list(by_id))
        inserts = [{"client_id": client_id, "bitrix_id": rid, "date_modify": modified, "deleted": False,
                    "deleted_at": None, "data": dict(row), "synced_at": now}
                   for rid, (row, modified) in by_id.items() if rid not in existing]
        updates = [{"b_id": rid, "b_modified": modified, "b_data": dict(row), "b_now": now}
                   for rid, (row, modified) in by_id.items()
                   if rid in existing and _news(existing[rid], row, modified, force)]
        if updates:
            written += _replace(table, client_id, updates, force)
        inserted = _insert_new(table, inserts) if inserts else 0
        written += inserted
        if inserted == len(inserts):
            break
        by_id = {rid: by_id[rid] for rid in (i["bitrix_id"] for i in inserts)}
    session.commit()
    return written


def _stored(model: type, client_id: int, ids: list[int]) -> dict[int, tuple[dt.datetime | None, bool, Any]]:
    rows = runtime().session.execute(select(model.bitrix_id, model.date_modify, model.deleted, model.data).where(
        model.client_id == client_id, model.bitrix_id.in_(ids)).execution_options(populate_existing=True))
    return {int(rid): (_utc(modified), deleted, data) for rid, modified, deleted, data in rows}


def _insert_new(table: Any, rows: list[dict[str, Any]]) -> int:
    """Insert rows, skipping any whose (client_id, bitrix_id) is taken; how many went in. On other
    databases a conflict is an error, as before (the caller's run fails and is run again)."""
    connection = runtime().session.connection()
    dialect = connection.dialect.name
    if dialect in ("postgresql", "sqlite"):
        module = __import__(f"sqlalchemy.dialects.{dialect}", fromlist=["insert"])
        stmt = module.insert(table).on_conflict_do_nothing(index_elements=["client_id", "bitrix_id"])
    elif dialect in ("mysql", "mariadb"):
        stmt = table.insert().prefix_with("IGNORE")
    else:
        stmt = table.insert()
    result = connection.execute(stmt, rows)
    count = result.rowcount
    return len(rows) if count is None or count < 0 else count


def _news(stored: tuple[dt.datetime | None, bool, Any], row: Mapping[str, Any], modified: dt.datetime | None,
          force: bool) -> bool:
    """Whether a listed row says something the stored one does not (the SQL guard in ``_replace`` checks
    the dates again, against a write that came in between)."""
    have, deleted, data = stored
    if modified is None:  # (every listing selects DATE_MODIFY: only a row without one could lack it)
        return have is None and (data != row or (deleted and force))
    if have is None:
        return not deleted or force
    if deleted:
        return force or modified > have
    return modified > have or (modified == have and data != row)


def _replace(table: Any, client_id: int, updates: list[dict[str, Any]], force: bool) -> int:
    """Replace stored rows by these, each only where the stored one is not newer (``force``: also
    where it is marked deleted). A row without DATE_MODIFY replaces whatever is there."""
    c = table.c
    modified = bindparam("b_modified", type_=c.date_modify.type)
    newer = or_(c.date_modify.is_(None), c.date_modify < modified)
    same = and_(c.date_modify == modified, c.deleted.is_(False))
    guard = or_(c.deleted.is_(True), newer, same) if force else or_(newer, same)
    values = {"date_modify": modified, "data": bindparam("b_data", type_=c.data.type), "deleted": False,
              "deleted_at": None, "synced_at": bindparam("b_now", type_=c.synced_at.type)}
    dated = [u for u in updates if u["b_modified"] is not None]
    undated = [u for u in updates if u["b_modified"] is None]
    connection = runtime().session.connection()
    written = 0
    if dated:
        stmt = update(table).where(c.client_id == client_id, c.bitrix_id == bindparam("b_id"), guard).values(**values)
        written += max(connection.execute(stmt, dated).rowcount, 0)
    if undated:  # only over undated rows: an undated listing never replaces a dated one
        stmt = update(table).where(c.client_id == client_id, c.bitrix_id == bindparam("b_id"),
                                   c.date_modify.is_(None)).values(**values)
        written += max(connection.execute(stmt, undated).rowcount, 0)
    return written


def mark_deleted(entity: str, client_id: int, ids: Iterable[int], *, seen_before: dt.datetime | None = None,
                 tombstones: bool = False) -> int:
    """Flag rows deleted (their data stays); ``seen_before``: only rows stored before then (a row an
    event stored during an ID comparison is newer than the portal's list we compare with).
    ``tombstones`` (a delete event): an ID not stored yet gets a deleted row, dated now, so that a
    listing read before the deletion cannot store it as live afterwards. Commits."""
    model = _model(entity)
    ids = sorted({int(i) for i in ids})
    done = 0
    session = runtime().session
    now = utcnow()
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        stmt = update(model).where(model.client_id == client_id, model.bitrix_id.in_(chunk),
                                   model.deleted.is_(False))
        if seen_before is not None:
            stmt = stmt.where(model.synced_at < seen_before)
        done += session.execute(stmt.values(deleted=True, deleted_at=now).execution_options(
            synchronize_session=False)).rowcount or 0
        if tombstones:
            unknown = set(chunk) - set(_stored(model, client_id, chunk))
            if unknown:
                done += _insert_new(model.__table__, [
                    {"client_id": client_id, "bitrix_id": rid, "date_modify": now, "deleted": True, "deleted_at": now,
                     "data": {"ID": str(rid)}, "synced_at": now} for rid in sorted(unknown)])
    session.commit()
    return done


# -- state and claims ----------------------------------------------------------------------------
#
# A mirror's state is its own row of the sync-state table, keyed "mirror:<entity>": its cursor is apart
# from reconciliation's, so turning the mirror off and on again (while reconciliation moves on) starts
# where the mirror itself stopped.

KEY = "mirror:"


def _state_model() -> type:
    model = runtime().sync_state_model
    if model is None:
        raise MirrorUnavailable("the mirror needs its sync-state table: set BITRIX_SYNC_ENTITIES")
    return model


def _state(client_id: int, entity: str, *, create: bool = False) -> Any:
    from .reconcile import _state as reconcile_state

    if create:
        return reconcile_state(client_id, KEY + entity)
    model = _state_model()
    return runtime().session.execute(
        select(model).where(model.client_id == client_id, model.entity == KEY + entity)
        .execution_options(populate_existing=True)).scalar_one_or_none()


def enable(client_id: int, entity: str, on: bool = True) -> None:
    """Turn the mirror of one tenant's entity on (the first run copies everything) or off (rows stay)."""
    _model(entity)
    state = _state(client_id, entity, create=True)
    state.mirror = on
    runtime().session.commit()


def enabled(client_id: int | None, entity: str) -> bool:
    if client_id is None or entity not in runtime().mirror_models or runtime().sync_state_model is None:
        return False
    state = _state(client_id, entity)
    return bool(state is not None and state.mirror)


def _claim(client_id: int, entity: str) -> str | None:
    model = _state_model()
    token, now = uuid.uuid4().hex, utcnow()
    session = runtime().session
    done = session.execute(update(model).where(
        model.client_id == client_id, model.entity == KEY + entity,
        or_(model.claim.is_(None), model.claimed_until.is_(None), model.claimed_until < now),
    ).values(claim=token, claimed_until=now + dt.timedelta(seconds=CLAIM_SECONDS)).execution_options(
        synchronize_session=False)).rowcount
    session.commit()
    return token if done else None


def claim_expired(client_id: int, entity: str) -> bool:
    """No run holds this tenant's entity now (the scheduler's test of a queued job said to be running)."""
    state = _state(client_id, entity)
    until = _utc(state.claimed_until) if state is not None and state.claimed_until else None
    return state is None or state.claim is None or until is None or until < utcnow()


def _renew(client_id: int, entity: str, token: str, **values: Any) -> None:
    """Write progress (checkpoint, phase...) and extend the claim; lost claim: stop (another run took over)."""
    model = _state_model()
    session = runtime().session
    done = session.execute(update(model).where(
        model.client_id == client_id, model.entity == KEY + entity, model.claim == token,
    ).values(claimed_until=utcnow() + dt.timedelta(seconds=CLAIM_SECONDS), **values).execution_options(
        synchronize_session=False)).rowcount
    session.commit()
    if not done:
        raise MirrorUnavailable(f"client {client_id} {entity}: another run took this sync over")


def _release(client_id: int, entity: str, token: str, **values: Any) -> None:
    model = _state_model()
    session = runtime().session
    session.rollback()  # our run's own session (a command's or a job's): nothing of anyone else's is in it
    session.execute(update(model).where(
        model.client_id == client_id, model.entity == KEY + entity, model.claim == token,
    ).values(claim=None, claimed_until=None, **values).execution_options(synchronize_session=False))
    session.commit()


# -- a run ---------------------------------------------------------------------------------------


@dataclass
class SyncReport:
    client_id: int
    entity: str
    copied: int = 0  # rows stored by the first copy in this run
    changed: int = 0  # rows stored by the incremental walk
    deleted: int = 0  # rows the ID comparison found gone
    restored: int = 0  # rows the ID comparison found missing here, read and stored
    phase: str | None = None
    busy: bool = False  # another run holds this tenant's entity
    cursor: str | None = None
    notes: list[str] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "entity": self.entity, "phase": self.phase, "copied": self.copied,
                "changed": self.changed, "deleted": self.deleted, "restored": self.restored, "busy": self.busy,
                "cursor": self.cursor, "notes": self.notes}


FIELDS_TTL = 600.0  # seconds a tenant's field list is reused (events would otherwise ask for it each time)


def select_fields(ent: Entity, client_id: int) -> list[str]:
    """Every field, as an export takes them: ``*``, ``UF_*`` and the multi-fields by name (the entity's
    ``fields`` asked once per 10 minutes per tenant and process)."""
    from .transfer import export_plan

    rt = runtime()
    now = rt.caller.clock()
    hit = rt.mirror_fields.get((client_id, ent.name))
    if hit is not None and hit[0] > now:
        return list(hit[1])
    fields = list(export_plan(ent, client_id, {}, []).params.get("select") or ["*", "UF_*"])
    rt.mirror_fields[(client_id, ent.name)] = (now + FIELDS_TTL, fields)
    return list(fields)


def sync(client_id: int, entity: str, *, check_ids: bool | None = None, accept_deletions: bool = False,
         progress: Callable[[str, int], None] | None = None) -> SyncReport:
    """One run for one tenant's entity: the first copy (or its rest), then what changed since the
    cursor, then the ID comparison when due (``check_ids`` forces it on or off). Turns the mirror on
    once the tenant's portal has answered (a client without a portal gets an error, not a mirror)."""
    from .bulk import bx_list_all

    if entity not in MIRRORABLE:
        raise MirrorUnavailable(f"the mirror covers {', '.join(MIRRORABLE)}, not {entity!r}")
    _model(entity)
    ent = ENTITIES[entity]
    report = SyncReport(client_id, entity)
    fields = select_fields(ent, client_id)  # the portal answers for this client, or this raises
    state = _state(client_id, entity, create=True)
    if not state.mirror:
        state.mirror = True
        runtime().session.commit()
    token = _claim(client_id, entity)
    if token is None:
        report.busy, report.phase = True, _state(client_id, entity).phase
        return report
    try:
        state = _state(client_id, entity)
        if state.phase != PHASE_INCREMENTAL:
            started = _utc(state.copy_started_at) or utcnow()
            last = int(state.checkpoint or 0)
            _renew(client_id, entity, token, phase=PHASE_COPY, copy_started_at=started)
            params = {"filter": {">ID": last}, "select": fields}
            chunk: list[Any] = []
            for row in bx_list_all(ent.method("list"), params, client_id=client_id, mode="keyset"):
                chunk.append(row)
                if len(chunk) >= CHUNK:
                    report.copied += _copy_chunk(entity, client_id, token, chunk)
                    if progress:
                        progress("copied", report.copied)
                    chunk = []
            if chunk:
                report.copied += _copy_chunk(entity, client_id, token, chunk)
            # From here on the walk by date catches up on whatever changed while we copied.
            _renew(client_id, entity, token, phase=PHASE_INCREMENTAL, copied_at=utcnow(),
                   cursor=started.isoformat(timespec="seconds"))
            if progress:
                progress("copied", report.copied)
        report.changed, report.cursor = _incremental(client_id, entity, fields, token)
        if progress:
            progress("changed", report.changed)
        state = _state(client_id, entity)
        due = float(current_app.config.get("BITRIX_SYNC_ID_CHECK_SECONDS", 86400.0))
        checked = _utc(state.ids_checked_at)
        if check_ids or (check_ids is None and (checked is None or (utcnow() - checked).total_seconds() >= due)
                         and report.copied == 0):
            report.deleted, report.restored = _compare_ids(ent, client_id, fields, token, accept_deletions, report)
            if progress:
                progress("deleted", report.deleted)
        report.phase = PHASE_INCREMENTAL
        _release(client_id, entity, token, last_success_at=utcnow(),
                 last_error="; ".join(report.notes)[:2000] or None)
    except Bitrix24Error as exc:
        model = _state_model()
        _release(client_id, entity, token, last_error=f"{exc.code}: {exc.description}"[:2000],
                 errors=model.errors + 1, last_run_at=utcnow())
        raise
    except BaseException:
        _release(client_id, entity, token)
        raise
    return report


def _copy_chunk(entity: str, client_id: int, token: str, rows: list[Any]) -> int:
    stored = store_rows(entity, client_id, rows)
    _renew(client_id, entity, token, checkpoint=str(rows[-1]["ID"]))
    return stored


def _incremental(client_id: int, entity: str, fields: list[str], token: str) -> tuple[int, str | None]:
    """What changed since the cursor, stored; synthetic events too when the entity is also reconciled
    (BITRIX_RECONCILE_ENTITIES): the same walk serves both."""
    from . import reconcile

    stored = {"rows": 0}

    def sink(rows: list[Any]) -> None:
        stored["rows"] += store_rows(entity, client_id, rows)
        _renew(client_id, entity, token)

    result = reconcile.reconcile(client_id, entity, fields=fields, sink=sink, state_key=KEY + entity,
                                 announce=entity in reconcile.entities())
    return stored["rows"], result.cursor


MASS_DELETION = 0.5  # an ID comparison that would delete more than this share of the rows (and 100+) asks first


def _compare_ids(ent: Entity, client_id: int, fields: list[str], token: str, accept_deletions: bool,
                 report: SyncReport) -> tuple[int, int]:
    """Every ID the portal lists against the mirror's live rows: gone there, deleted here; there but
    not here (or marked deleted here), read and stored."""
    from .bulk import bx_list_all

    model = _model(ent.name)
    session = runtime().session
    started = utcnow()
    portal: set[int] = set()
    for row in bx_list_all(ent.method("list"), {"select": ["ID"]}, client_id=client_id, mode="keyset"):
        portal.add(int(row["ID"]))
        if len(portal) % 10_000 == 0:
            _renew(client_id, ent.name, token)  # a long listing keeps its claim
    _renew(client_id, ent.name, token)
    live = set(session.execute(select(model.bitrix_id).where(
        model.client_id == client_id, model.deleted.is_(False))).scalars())
    gone = sorted(live - portal)
    if len(gone) > 100 and len(gone) > MASS_DELETION * len(live) and not accept_deletions:
        # More likely the webhook's user lost sight of records (its permissions) than the portal lost them.
        note = (f"the portal no longer lists {len(gone):,} of the {len(live):,} {ent.name} in the mirror: nothing "
                f"was marked deleted; if they are gone, run sync --check-ids --accept-deletions")
        report.notes.append(note)
        log.error("bitrix24 mirror of client %s %s: %s", client_id, ent.name, note)
        gone = []
    deleted = mark_deleted(ent.name, client_id, gone, seen_before=started)
    missing = sorted(portal - live)
    restored = 0
    for start in range(0, len(missing), 50):
        ids = missing[start:start + 50]
        rows = list(bx_list_all(ent.method("list"), {"filter": {"@ID": ids}, "select": fields},
                                client_id=client_id, mode="keyset"))
        restored += store_rows(ent.name, client_id, rows, force=True)
        _renew(client_id, ent.name, token)
    _renew(client_id, ent.name, token, ids_checked_at=utcnow())
    if deleted or restored:
        log.warning("bitrix24 mirror of client %s %s: %d deletions and %d records nobody announced found by ID",
                    client_id, ent.name, deleted, restored)
    return deleted, restored


# -- events --------------------------------------------------------------------------------------


def _entity_of(event_name: str) -> tuple[str, str] | None:
    name = event_name.upper()
    for entity in MIRRORABLE:
        prefix = ENTITIES[entity].event_prefix
        for action in ("ADD", "UPDATE", "DELETE"):
            if name == f"{prefix}{action}":
                return entity, action
    return None


def on_record_event(event: Any) -> None:
    """The mirror's handler of ONCRM<ENTITY>ADD/UPDATE/DELETE: read the record again (events carry only
    its ID) and store it, or mark it deleted. A tenant whose mirror is off is left alone."""
    found = _entity_of(event.name)
    if found is None or not event.entity_id:
        return
    entity, action = found
    for client_id in _tenants_of(event, entity):
        _follow(event, entity, action, client_id)


def _tenants_of(event: Any, entity: str) -> list[int]:
    """Whose mirror the event is for: its tenant's, when on. An event verified with the environment's
    token has no tenant (BITRIX_WEBHOOK_BASE serves every client without a config of its own): it is for
    the mirrored clients whose portal is the one it came from, by domain, and nobody else's."""
    if event.client_id is not None:
        return [event.client_id] if enabled(event.client_id, entity) else []
    from ..store import portal_domain
    from .client_config import portal_target

    auth = event.payload.get("auth") if isinstance(event.payload, dict) else None
    domain = str((auth or {}).get("domain") or "").lower()
    if not domain:
        return []
    tenants = []
    for client_id, name in pairs():
        if name != entity:
            continue
        try:
            base = portal_target(client_id).base
        except Exception:  # noqa: BLE001 - a client without a usable portal: not this event's
            continue
        if base and portal_domain(base) == domain:
            tenants.append(client_id)
    return tenants


def _follow(event: Any, entity: str, action: str, client_id: int) -> None:
    from .bulk import bx_list_all

    record_id = int(event.entity_id)
    if action == "DELETE":
        mark_deleted(entity, client_id, [record_id], tombstones=True)
        return
    synthetic = event.payload.get("synthetic") if isinstance(event.payload, dict) else None
    if isinstance(synthetic, dict):
        # Reconciliation's own events: the walk that made them stored the row already.
        model = _model(entity)
        have = runtime().session.execute(select(model.date_modify).where(
            model.client_id == client_id, model.bitrix_id == record_id)).scalar_one_or_none()
        when = _utc(synthetic.get("modified"))
        if have is not None and when is not None and _utc(have) >= when:
            return
    ent = ENTITIES[entity]
    rows = list(bx_list_all(ent.method("list"), {"filter": {"@ID": [record_id]},
                                                 "select": select_fields(ent, client_id)},
                            client_id=client_id, mode="keyset"))
    if rows:
        store_rows(entity, client_id, rows)
    else:  # gone already (deleted right after), or out of the webhook's sight
        mark_deleted(entity, client_id, [record_id], tombstones=True)


def builtin_event_names(mirrored: Mapping[str, Any]) -> list[str]:
    return [f"{ENTITIES[entity].event_prefix}{action}" for entity in mirrored if entity in MIRRORABLE
            for action in ("ADD", "UPDATE", "DELETE")]


def builtin_handlers(mirrored: Mapping[str, Any], event_name: str) -> list[Callable[[Any], None]]:
    """The mirror's handler, for the events of the entities this app mirrors (runtime.handlers_for)."""
    found = _entity_of(event_name)
    return [on_record_event] if found is not None and found[0] in mirrored else []


# -- status --------------------------------------------------------------------------------------


def status(client_id: int) -> list[dict[str, Any]]:
    """Each mirrored entity of one tenant: on or off, phase, rows, cursor, lag, errors."""
    rt = runtime()
    out = []
    now = utcnow()
    for entity, model in rt.mirror_models.items():
        state = _state(client_id, entity) if rt.sync_state_model is not None else None
        counts = dict(rt.session.execute(select(model.deleted, func.count()).where(
            model.client_id == client_id).group_by(model.deleted)).all())
        success = _utc(state.last_success_at) if state is not None and state.last_success_at else None
        claimed = _utc(state.claimed_until) if state is not None and state.claimed_until else None
        out.append({
            "entity": entity,
            "enabled": bool(state is not None and state.mirror),
            "phase": state.phase if state is not None else None,
            "running": bool(claimed and claimed > now),
            "rows": int(counts.get(False, 0)),
            "deleted_rows": int(counts.get(True, 0)),
            "checkpoint": state.checkpoint if state is not None else None,
            "cursor": state.cursor if state is not None else None,
            # How old the mirror's view may be: the time since the last run that finished.
            "lag_seconds": round((now - success).total_seconds(), 1) if success else None,
            "last_success_at": iso(success),
            "copied_at": iso(state.copied_at) if state is not None else None,
            "ids_checked_at": iso(state.ids_checked_at) if state is not None else None,
            "errors": int(state.errors or 0) if state is not None else 0,
            "last_error": state.last_error if state is not None else None,
        })
    return out


def pairs() -> list[tuple[int, str]]:
    """Every (tenant, entity) whose mirror is on: the worker's schedule."""
    rt = runtime()
    if rt.sync_state_model is None or not rt.mirror_models:
        return []
    model = rt.sync_state_model
    rows = rt.session.execute(select(model.client_id, model.entity).where(
        model.mirror.is_(True), model.entity.in_([KEY + e for e in rt.mirror_models]))).all()
    return sorted((int(c), str(e)[len(KEY):]) for c, e in rows)


def sync_all() -> list[SyncReport]:
    """Every tenant's mirrored entities, one after another; a failing one is logged and the others go on."""
    reports = []
    for client_id, entity in pairs():
        try:
            reports.append(sync(client_id, entity))
        except Exception as exc:  # noqa: BLE001 - one tenant's failure (its portal, its config) is not the others'
            runtime().session.rollback()
            log.warning("bitrix24 mirror of client %s %s failed: %s", client_id, entity, exc)
    return reports


def run_job(client_id: int, entity: str) -> dict[str, Any] | None:
    """The RQ job of one tenant's entity (queued by the worker's timer)."""
    if (client_id, entity) not in pairs():
        return None  # turned off since it was queued
    return sync(client_id, entity).view()


__all__ = ["MIRRORABLE", "MirrorUnavailable", "SyncReport", "builtin_event_names", "builtin_handlers",
           "claim_expired", "configured_entities", "enable", "enabled",
           "mark_deleted", "on_record_event", "pairs", "run_job", "select_fields", "status", "store_rows", "sync",
           "sync_all"]
