"""Operations: health for load balancers and orchestrators, Prometheus metrics."""

from __future__ import annotations

from flask import Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST

from ..services.health import health as health_report


def health():
    """Database, Redis, limiter and event-queue state; 503 when the database or a configured Redis is down.
    Public (no API key): it names no tenant and no secret."""
    report, healthy = health_report(current_app.extensions["bitrix24"])
    return report, 200 if healthy else 503


def metrics():
    """Prometheus metrics: calls, errors by code, limits met, retries, operating time, events and their lag."""
    body = current_app.extensions["bitrix24"].metrics.exposition()
    return Response(body, content_type=CONTENT_TYPE_LATEST)
