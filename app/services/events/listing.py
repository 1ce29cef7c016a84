"""Reading the event log: a client's events (which it may see), and the counts the metrics show."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select

from ...models.status import WAITING
from .table import _model, _session


def sees_environment_events(client_id: int) -> bool:
    """A client with no config of its own works on the environment's portal (BITRIX_WEBHOOK_BASE, as in
    demo mode): that portal's events, kept without a client, are in its log too. It can read and
    change that portal's records through the API already, so this shows it nothing new."""
    from ..client_config import effective_config

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
