"""Running an event again on request: ``replay`` one (whatever its status), ``retry_failed`` all
kept as failed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ...models.status import EventStatus
from .dispatch import dispatch_event, submit
from .table import _aware, _model, _now, _session


class EventBusy(Exception):
    """A replay was asked for while a run holds the event."""


def replay(event_id: int) -> Any:
    """Run an event's handlers again, whatever its status (attempts start over)."""
    row = _session().get(_model(), event_id)
    if row is None:
        raise LookupError(event_id)
    if row.status == EventStatus.PROCESSING and row.next_attempt_at and _aware(row.next_attempt_at) > _now():
        raise EventBusy(f"event {event_id} is being handled right now; replay it once that run has finished")
    row.status, row.attempts, row.next_attempt_at, row.last_error = EventStatus.RECEIVED, 0, None, None
    _session().commit()
    if not submit(event_id):
        dispatch_event(event_id)
    _session().refresh(row)
    return row


def retry_failed(client_id: int | None = None) -> int:
    stmt = select(_model().id).where(_model().status == EventStatus.FAILED)
    if client_id is not None:
        stmt = stmt.where(_model().client_id == client_id)
    ids = list(_session().execute(stmt).scalars())
    for event_id in ids:
        replay(event_id)
    return len(ids)
