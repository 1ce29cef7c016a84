"""Bitrix24's outbound events: verify, store durably, dedupe, then hand to the registered handlers.

Bitrix24 posts each event once and never retries, sends only IDs, and proves
its origin only with the shared application token. So: find the tenant, compare the token in
constant time (a token of another tenant is a mismatch), commit a ``BitrixEvent`` row before
answering (unique on a dedupe key: a re-delivery is never stored twice, and runs the handlers
again only once the first was handled), and run handlers afterwards: inline after the answer, or
in an RQ worker. A handler that raises is retried with backoff up to BITRIX_EVENT_MAX_ATTEMPTS, then kept as ``failed``.

Bitrix24's delivery rules: https://apidocs.bitrix24.com/api-reference/events/index.html
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import hmac
import json
import logging
import random
import re
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError

from .. import logs
from ..entities import ENTITIES, entity_for_event
from ..runtime import runtime
from .client_config import configs_for_portal, stored_config
from .metrics import tenant_label

log = logging.getLogger("flask_bitrix24")

# Never stored: the shared secret itself and OAuth tokens an app event may carry.
_SECRET_AUTH_KEYS = ("application_token", "access_token", "refresh_token")
STATUSES = ("received", "queued", "processing", "done", "retry", "failed")


class EventBusy(Exception):
    """A replay was asked for while a run holds the event."""


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)  # SQLite drops the zone


class EventRejected(Exception):
    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status, self.code, self.description = status, code, description


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _model() -> Any:
    """The app's event log model (ours on the host's ``db``, or the host's own)."""
    return runtime().event_model


def _session() -> Any:
    return runtime().session


def _token_matches(given: str, expected: str | None) -> bool:
    if not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _auth(payload: dict[str, Any]) -> dict[str, Any]:
    auth = payload.get("auth")
    return auth if isinstance(auth, dict) else {}


def _text(value: Any, limit: int = 255) -> str:
    # Only plain printable ASCII is used for routing and stored in clear (domains, member ids).
    if isinstance(value, str) and value.isascii() and value.isprintable() and len(value) <= limit:
        return value
    return ""


_MEMBER_ID = re.compile(r"[0-9a-f]{32}")
_EVENT_NAME = re.compile(r"[A-Z0-9_]{1,128}")


def _find_tenant(payload: dict[str, Any], client_id: int | None, given: str) -> tuple[int | None, Any]:
    """The client this event belongs to (None: the environment's token) and its config. Raises on
    mismatch.

    Candidates: the per-client URL's config; else every stored config of the portal named by
    ``auth[member_id]`` (learnt from earlier verified events) *or* ``auth[domain]``; else
    BITRIX_OUTBOUND_TOKEN. The token must be the candidate's own: another tenant's is a mismatch.
    Tokens are compared in constant time, every candidate checked.
    """
    invalid = EventRejected(401, "INVALID_TOKEN", "invalid application_token")
    if client_id is not None:
        config = stored_config(client_id)
        if config is None or not _token_matches(given, _expected_token(config)):
            raise invalid
        return client_id, config
    auth = _auth(payload)
    member, domain = _text(auth.get("member_id"), 64), _text(auth.get("domain"))
    # The union, not "member first": a tenant that claimed someone else's member_id cannot hide
    # the real owner's config.
    candidates = {c.client_id: c for c in configs_for_portal(member, domain)}
    if candidates:
        matched = [c for c in candidates.values() if _token_matches(given, _expected_token(c))]
        if matched:
            return matched[0].client_id, matched[0]
        raise invalid
    if _token_matches(given, current_app.config.get("BITRIX_OUTBOUND_TOKEN")):
        return None, None
    raise invalid


def _expected_token(config: Any) -> str | None:
    """The client's own token, else BITRIX_OUTBOUND_TOKEN: what the debug view says applies."""
    return config.outbound_token or current_app.config.get("BITRIX_OUTBOUND_TOKEN") or None


def dedupe_key(payload: dict[str, Any], tenant: int | None = None) -> str:
    """One key per delivery of one event to one tenant: a re-delivery has the same key; another
    tenant, or another subscription (event_handler_id), never shares it."""
    auth = _auth(payload)
    portal = auth.get("member_id") or auth.get("domain") or ""
    event = payload.get("event")
    name = event.strip().upper() if isinstance(event, str) else event  # as stored: onCrmDealUpdate is one event
    material = json.dumps(
        [tenant, portal, name, payload.get("event_handler_id"), payload.get("data"), payload.get("ts")],
        sort_keys=True, default=str,
    )
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


def _scrub(payload: dict[str, Any]) -> dict[str, Any]:
    clean = copy.deepcopy(payload)
    auth = clean.get("auth")
    if isinstance(auth, dict):
        for key in _SECRET_AUTH_KEYS:
            auth.pop(key, None)
    return clean


def _learn_member_id(config: Any, member_id: str, domain: str) -> None:
    """Remember the portal's member_id (it survives a domain rename), but only a well-formed one
    sent from the very host the operator saved for this client, in an event its token proved."""
    if config is None or config.member_id or not _MEMBER_ID.fullmatch(member_id):
        return
    if not domain or domain.lower() != (config.portal_domain or ""):
        return
    # Its own small transaction, before the event's: a store that cannot keep it (a short column,
    # a host constraint) must never cost us the event.
    try:
        runtime().store.remember_member_id(config.client_id, member_id)  # the store commits it
    except Exception as exc:  # noqa: BLE001 - logged; the event is what matters
        _session().rollback()
        log.warning("could not remember member_id for client %s: %s", config.client_id, type(exc).__name__)


def _valid_text(value: Any) -> bool:
    """No lone surrogates anywhere (JSON bodies can carry them; no database stores them)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_valid_text(k) and _valid_text(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_valid_text(v) for v in value)
    return True


def receive_event(payload: dict[str, Any], *, client_id: int | None = None) -> tuple[Received, bool]:
    """Verify and store one event. Returns ``(event, duplicate)``; raises ``EventRejected``."""
    if not _valid_text(payload):
        raise EventRejected(400, "INVALID_BODY", "the event holds text that is not valid UTF-8")
    event_name = payload.get("event")
    name = event_name.strip().upper() if isinstance(event_name, str) else ""
    if not _EVENT_NAME.fullmatch(name):
        raise EventRejected(400, "INVALID_EVENT", "the payload has no valid 'event' name (like ONCRMDEALUPDATE)")
    given = _auth(payload).get("application_token")
    if not isinstance(given, str) or not given:
        raise EventRejected(401, "INVALID_TOKEN", "invalid application_token: auth[application_token] is missing")
    tenant, config = _find_tenant(payload, client_id, given)

    data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    fields = data.get("FIELDS") if isinstance(data.get("FIELDS"), dict) else {}
    entity = entity_for_event(name)
    key = dedupe_key(payload, tenant)
    # Nothing listens: the event is logged and finished in one write (replay runs it later if needed).
    unhandled = not runtime().hooks.handlers_for(name)
    domain = _text(_auth(payload).get("domain"))
    now = _now()  # one clock reading: processed_at never precedes received_at
    row = _model()(
        client_id=tenant,
        # The tenant's own portal host, once the token proved the tenant (a per-client URL checks no
        # domain, so what the sender wrote there is not kept as fact); the sender's for the env token.
        portal_domain=(config.portal_domain if config is not None and config.portal_domain else domain) or None,
        event=name,
        entity_type=entity.type_name if entity else None,
        entity_id=_text(str(fields.get("ID")), 64) or None if fields.get("ID") is not None else None,
        payload=_scrub(payload),
        dedupe_key=key,
        status="done" if unhandled else "received",
        received_at=now,
        processed_at=now if unhandled else None,
    )
    _learn_member_id(config, _text(_auth(payload).get("member_id"), 64), domain)
    _session().add(row)
    try:
        _session().flush()
        # Read before the commit expires them: once the row is committed, the answer must not need
        # the database again (a failover right then would turn a stored event into a 503).
        stored = Received(row.id, row.status)
        _session().commit()
    except IntegrityError:
        _session().rollback()
        return _again(key, unhandled)
    return stored, False


@dataclass(frozen=True)
class Received:
    """What the receiver answers with: the stored event's id and status."""

    id: int
    status: str


def _again(key: str, unhandled: bool) -> tuple[Received, bool]:
    """The same delivery once more. While the first is still waiting to be handled, it is the same
    work: acknowledged, not stored twice. Once the first was handled, it is news (the record may
    have changed again within the same second: ``ts`` has whole seconds), so the row runs again; the
    handlers read the record's current state either way."""
    model, session = _model(), _session()
    existing = session.execute(select(model).where(model.dedupe_key == key)).scalar_one()
    seen = Received(existing.id, existing.status)
    if unhandled or seen.status not in ("done", "failed"):
        return seen, True
    now = _now()
    reopened = session.execute(
        update(model)
        .where(model.id == seen.id, model.status.in_(("done", "failed")))
        .values(status="received", attempts=0, last_error=None, next_attempt_at=None, processed_at=None,
                received_at=now)
    ).rowcount
    session.commit()
    if reopened == 1:
        return Received(seen.id, "received"), False
    return seen, True  # another delivery reopened it first: the same work


# ---------------------------------------------------------------------------------------------------
# Handling


@dataclass
class Event:
    """What a handler receives. ``fetch()`` loads the record's current state (events carry only IDs)."""

    id: int
    name: str
    client_id: int | None
    entity_type: str | None
    entity_id: str | None
    payload: dict[str, Any] = field(repr=False)
    attempt: int = 1

    @property
    def data(self) -> dict[str, Any]:
        data = self.payload.get("data")
        return data if isinstance(data, dict) else {}

    def fetch(self) -> dict[str, Any]:
        from .bitrix24_service import bx_call

        entity = next((e for e in ENTITIES.values() if e.type_name == self.entity_type), None)
        if entity is None or not self.entity_id:
            raise ValueError(f"{self.name} is not about a CRM record we know how to fetch")
        return bx_call(entity.method("get"), {"id": int(self.entity_id)}, client_id=self.client_id)["result"]


def _backoff(attempts: int) -> float:
    base = float(current_app.config["BITRIX_EVENT_RETRY_BASE"])
    return min(3600.0, base * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2)


LEASE_SECONDS = 900  # a claim older than this is a crashed run (jobs time out at 600 s)


def _claimable():
    # New; a retry whose time has come (a second queue message for it, from a sweep, must not run
    # it before its backoff is over); or claimed by a run that died without recording an outcome
    # (lease expired).
    model, now = _model(), _now()
    return or_(
        model.status.in_(("received", "queued")),
        (model.status == "retry") & (model.next_attempt_at <= now),
        (model.status == "processing") & (model.next_attempt_at <= now),
    )


def _claim(event_id: int) -> bool:
    """Take the event for processing, with a lease; False when someone else has it or it is done."""
    result = _session().execute(
        update(_model())
        .where(_model().id == event_id, _claimable())
        .values(status="processing", attempts=_model().attempts + 1,
                next_attempt_at=_now() + dt.timedelta(seconds=LEASE_SECONDS))
    )
    _session().commit()
    return result.rowcount == 1


def dispatch_event(event_id: int) -> Any:
    """Run the handlers for one stored event and record the outcome. Needs an app context."""
    with logs.bound(request_id=f"event-{event_id}"):
        return _dispatch(event_id)


def _dispatch(event_id: int) -> Any:
    from .bitrix24_service import background_work

    if not _claim(event_id):
        return _session().get(_model(), event_id)
    row = _session().get(_model(), event_id)
    _session().refresh(row)
    max_attempts = int(current_app.config["BITRIX_EVENT_MAX_ATTEMPTS"])
    if row.attempts > max_attempts:
        # Claimed again after runs that never reported back (the worker died, or ran past its lease).
        row.status, row.next_attempt_at = "failed", None
        row.last_error = (row.last_error or "") + f" [gave up: {row.attempts - 1} runs ended without an outcome]"
        _session().commit()
        return row
    event = Event(row.id, row.event, row.client_id, row.entity_type, row.entity_id, row.payload, row.attempts)
    hooks = runtime().hooks
    with logs.bound(tenant=tenant_label(row.client_id)), background_work():  # handlers yield to interactive calls
        try:
            for handler in hooks.handlers_for(row.event):
                handler(event)
        except Exception as exc:  # a handler's failure is recorded, never lost, never raised to Bitrix24
            _session().rollback()  # whatever the handler left in the session must not block our update
            row = _session().get(_model(), event_id)
            row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            if row.attempts >= max_attempts:
                row.status, row.next_attempt_at = "failed", None
                log.error("Bitrix24 event %s (%s) failed for good after %d attempts: %s",
                          row.id, row.event, row.attempts, row.last_error)
            else:
                row.status = "retry"
                row.next_attempt_at = _now() + dt.timedelta(seconds=_backoff(row.attempts))
                log.warning("Bitrix24 event %s (%s) handler failed (attempt %d), retrying: %s",
                            row.id, row.event, row.attempts, row.last_error)
        else:
            row.status, row.processed_at, row.next_attempt_at, row.last_error = "done", _now(), None, None
    _session().commit()
    return row


def submit(event_id: int) -> bool:
    """Hand an event to the queue. True when queued; False means "run it inline"."""
    if runtime().event_queue.submit(event_id):
        _session().execute(
            update(_model()).where(_model().id == event_id, _model().status == "received")
            .values(status="queued")
        )
        _session().commit()
        return True
    return False


def run_event_job(event_id: int) -> str | None:
    """The RQ job. ``flask bitrix24 worker`` runs each job in a fresh app context of the host's app
    (``event_queue.app_job_class``), so the handlers are the host's and the session is new."""
    if not has_app_context():
        raise RuntimeError("Bitrix24 event jobs need an app context: run them with `flask <group> worker` "
                           "(`flask bitrix24 worker` by default)")
    row = dispatch_event(event_id)
    return row.status if row else None


def due_events(limit: int = 100, stale_after: float = 60.0) -> list[int]:
    """Events to (re)run now: retries whose time has come, runs whose lease expired (a worker died
    mid-handler), and events received or queued more than ``stale_after`` seconds ago that nobody
    ran (a lost queue message, a crash)."""
    now = _now()
    stale = now - dt.timedelta(seconds=stale_after)
    stmt = (
        select(_model().id)
        .where(or_(
            _model().status.in_(("retry", "processing")) & (_model().next_attempt_at <= now),
            _model().status.in_(("received", "queued")) & (_model().received_at <= stale),
        ))
        .order_by(_model().id)
        .limit(limit)
    )
    return list(_session().execute(stmt).scalars())


def run_due(limit: int = 100, stale_after: float = 60.0) -> int:
    """Queue (with Redis) or run (inline) what is due; returns how many were handed on."""
    count = 0
    for event_id in due_events(limit, stale_after):
        if not submit(event_id):
            dispatch_event(event_id)
        count += 1
    return count


def replay(event_id: int) -> Any:
    """Run an event's handlers again, whatever its status (attempts start over)."""
    row = _session().get(_model(), event_id)
    if row is None:
        raise LookupError(event_id)
    if row.status == "processing" and row.next_attempt_at and _aware(row.next_attempt_at) > _now():
        raise EventBusy(f"event {event_id} is being handled right now; replay it once that run has finished")
    row.status, row.attempts, row.next_attempt_at, row.last_error = "received", 0, None, None
    _session().commit()
    if not submit(event_id):
        dispatch_event(event_id)
    _session().refresh(row)
    return row


def retry_failed(client_id: int | None = None) -> int:
    stmt = select(_model().id).where(_model().status == "failed")
    if client_id is not None:
        stmt = stmt.where(_model().client_id == client_id)
    ids = list(_session().execute(stmt).scalars())
    for event_id in ids:
        replay(event_id)
    return len(ids)


def sees_environment_events(client_id: int) -> bool:
    """A client with no config of its own works on the environment's portal (BITRIX_WEBHOOK_BASE, as in
    demo mode): that portal's events, kept without a client, are in its log too. It can read and
    change that portal's records through the API already, so this shows it nothing new."""
    from .client_config import effective_config

    config = effective_config(client_id)
    return config.source == "environment" and bool(config.webhook_base)


def belongs_to(row: Any, client_id: int) -> bool:
    """Whether the event ``row`` is in ``client_id``'s log (see ``sees_environment_events``)."""
    return row.client_id == client_id or (row.client_id is None and sees_environment_events(client_id))


def list_events(client_id: int | None, *, status: str | None = None, name: str | None = None,
                start: int = 0, limit: int = 50) -> tuple[list[Any], int]:
    stmt = select(_model())
    if client_id is not None and sees_environment_events(client_id):
        stmt = stmt.where(or_(_model().client_id == client_id, _model().client_id.is_(None)))
    elif client_id is not None:
        stmt = stmt.where(_model().client_id == client_id)
    if status:
        stmt = stmt.where(_model().status == status)
    if name:
        stmt = stmt.where(_model().event == name.upper())
    total = _session().execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    rows = _session().execute(stmt.order_by(_model().id.desc()).offset(start).limit(limit)).scalars().all()
    return list(rows), total


WAITING = ("received", "queued", "retry", "processing")


def event_stats() -> tuple[list[tuple[Any, str, int]], list[tuple[Any, Any]]]:
    """For the metrics: event counts by (client, status), and each client's oldest waiting event."""
    counts = _session().execute(
        select(_model().client_id, _model().status, func.count()).group_by(
            _model().client_id, _model().status
        )
    ).all()
    oldest = _session().execute(
        select(_model().client_id, func.min(_model().received_at))
        .where(_model().status.in_(WAITING))
        .group_by(_model().client_id)
    ).all()
    _session().rollback()  # read-only: end the transaction so SQLite does not hold a read lock
    return [tuple(row) for row in counts], [tuple(row) for row in oldest if row[1] is not None]
