"""Operations: health for load balancers and orchestrators, Prometheus metrics."""

from __future__ import annotations

from flask import Response

from ..runtime import runtime
from ..services.health import health as health_report
from .errors import ApiError


def health():
    """Database, Redis, limiter and event-queue state; 503 when the database or a configured Redis is down.
    Public (no API key): it names no tenant and no secret."""
    report, healthy = health_report(runtime())
    return report, 200 if healthy else 503


def sync_status(client_id: int):
    """The tenant's mirrors (incremental sync into this database): on or off, rows, cursor, lag, errors."""
    from ..services import mirror

    rows = mirror.status(client_id)
    answer: dict = {"client_id": client_id, "mirror": rows}
    if not rows:
        answer["hint"] = ("nothing is mirrored: set BITRIX_SYNC_ENTITIES (e.g. contacts,deals), then run "
                          f"`{runtime().command('sync')} contacts --client {client_id}`")
    return answer


def metrics():
    """Prometheus metrics: calls, errors by code, limits met, retries, operating time, events and their lag."""
    body = runtime().metrics.exposition()
    if body is None:
        raise ApiError(501, "METRICS_NOT_INSTALLED",
                       "metrics need prometheus_client: pip install 'flask-bitrix24[metrics]'")
    return Response(body, content_type=runtime().metrics.content_type)
