"""The sweep: events due to run now (retries whose time has come, expired leases, events nobody
ran), queued or run inline."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, select

from ...models.status import EventStatus
from .dispatch import dispatch_event, submit
from .table import _model, _now, _session


def due_events(limit: int = 100, stale_after: float = 60.0) -> list[int]:
    """Events to (re)run now: retries whose time has come, runs whose lease expired (a worker died
    mid-handler), and events received or queued more than ``stale_after`` seconds ago that nobody
    ran (a lost queue message, a crash)."""
    now = _now()
    stale = now - dt.timedelta(seconds=stale_after)
    stmt = (
        select(_model().id)
        .where(or_(
            _model().status.in_((EventStatus.RETRY, EventStatus.PROCESSING)) & (_model().next_attempt_at <= now),
            _model().status.in_((EventStatus.RECEIVED, EventStatus.QUEUED)) & (_model().received_at <= stale),
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
