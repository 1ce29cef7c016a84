"""Handling a stored event: claim it with a lease, run its handlers, record the outcome (done,
retry with backoff, or failed); ``submit`` hands it to the queue instead when there is one."""

from __future__ import annotations

import datetime as dt
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy import or_, update

from ... import logs
from ...entities import ENTITIES
from ...models.status import EventStatus
from ...runtime import runtime
from ..metrics import tenant_label
from .table import _model, _now, _session

log = logging.getLogger("flask_bitrix24")


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
        """The record as it is now, through its entity's own get (``crm.deal.get``, ``tasks.task.get``)."""
        from .. import records

        entity = next((e for e in ENTITIES.values() if e.type_name == self.entity_type), None)
        if entity is None or not self.entity_id:
            raise ValueError(f"{self.name} is not about a CRM record or task we know how to fetch")
        return records.get(entity, int(self.entity_id), client_id=self.client_id)


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
        model.status.in_((EventStatus.RECEIVED, EventStatus.QUEUED)),
        (model.status == EventStatus.RETRY) & (model.next_attempt_at <= now),
        (model.status == EventStatus.PROCESSING) & (model.next_attempt_at <= now),
    )


def _claim(event_id: int) -> bool:
    """Take the event for processing, with a lease; False when someone else has it or it is done."""
    result = _session().execute(
        update(_model())
        .where(_model().id == event_id, _claimable())
        .values(status=EventStatus.PROCESSING, attempts=_model().attempts + 1,
                next_attempt_at=_now() + dt.timedelta(seconds=LEASE_SECONDS))
    )
    _session().commit()
    return result.rowcount == 1


def dispatch_event(event_id: int) -> Any:
    """Run the handlers for one stored event and record the outcome. Needs an app context."""
    with logs.bound(request_id=f"event-{event_id}"):
        return _dispatch(event_id)


def _dispatch(event_id: int) -> Any:
    from ..bitrix24_service import background_work

    if not _claim(event_id):
        return _session().get(_model(), event_id)
    row = _session().get(_model(), event_id)
    _session().refresh(row)
    max_attempts = int(current_app.config["BITRIX_EVENT_MAX_ATTEMPTS"])
    if row.attempts > max_attempts:
        # Claimed again after runs that never reported back (the worker died, or ran past its lease).
        row.status, row.next_attempt_at = EventStatus.FAILED, None
        row.last_error = (row.last_error or "") + f" [gave up: {row.attempts - 1} runs ended without an outcome]"
        _session().commit()
        return row
    event = Event(row.id, row.event, row.client_id, row.entity_type, row.entity_id, row.payload, row.attempts)
    with logs.bound(tenant=tenant_label(row.client_id)), background_work():  # handlers yield to interactive calls
        try:
            for handler in runtime().hooks.handlers_for(row.event):
                handler(event)
        except Exception as exc:  # a handler's failure is recorded, never lost, never raised to Bitrix24
            _session().rollback()  # whatever the handler left in the session must not block our update
            row = _session().get(_model(), event_id)
            row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            if row.attempts >= max_attempts:
                row.status, row.next_attempt_at = EventStatus.FAILED, None
                log.error("Bitrix24 event %s (%s) failed for good after %d attempts: %s",
                          row.id, row.event, row.attempts, row.last_error)
            else:
                row.status = EventStatus.RETRY
                row.next_attempt_at = _now() + dt.timedelta(seconds=_backoff(row.attempts))
                log.warning("Bitrix24 event %s (%s) handler failed (attempt %d), retrying: %s",
                            row.id, row.event, row.attempts, row.last_error)
        else:
            row.status, row.processed_at, row.next_attempt_at, row.last_error = EventStatus.DONE, _now(), None, None
    _session().commit()
    _run_builtin(event)
    return row


def _run_builtin(event: Event) -> None:
    """Our own handlers (the mirror's), once the host's outcome is stored: what they do is theirs to
    commit, and a failure is logged and left to their next scheduled run (the mirror's walk by date
    finds the change), never charged to the host's handlers."""
    from ..bitrix24_service import background_work

    for handler in runtime().builtin_handlers_for(event.name):
        try:
            with logs.bound(tenant=tenant_label(event.client_id)), background_work():
                handler(event)
        except Exception as exc:  # noqa: BLE001 - see above
            _session().rollback()
            log.warning("Bitrix24 event %s (%s): the mirror could not follow it (%s: %s); its next run will",
                        event.id, event.name, type(exc).__name__, exc)


def submit(event_id: int) -> bool:
    """Hand an event to the queue. True when queued; False means "run it inline"."""
    if runtime().event_queue.submit(event_id):
        _session().execute(
            update(_model()).where(_model().id == event_id, _model().status == EventStatus.RECEIVED)
            .values(status=EventStatus.QUEUED)
        )
        _session().commit()
        return True
    return False
