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


def metrics():
    """Prometheus metrics: calls, errors by code, limits met, retries, operating time, events and their lag."""
    body = runtime().metrics.exposition()
    if body is None:
        raise ApiError(501, "METRICS_NOT_INSTALLED",
                       "metrics need prometheus_client: pip install 'flask-bitrix24[metrics]'")
    return Response(body, content_type=runtime().metrics.content_type)
