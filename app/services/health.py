"""What ``/api/bitrix/health`` reports: the database, Redis, the limiter and the event queue."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text


def _probe(check) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:  # a health check reports failures, it does not raise them
        return {"ok": False, "error": type(exc).__name__}  # the type only: messages can carry URLs
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 2)}


def health(state) -> tuple[dict[str, Any], bool]:
    """(report, healthy). Unhealthy when the database or a configured Redis does not answer."""

    db = state.db

    def database() -> None:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    report: dict[str, Any] = {"database": {"backend": db.engine.dialect.name, **_probe(database)}}
    redis_configured = state.buckets.name == "redis" or state.event_queue.name == "rq"
    report["redis"] = {"configured": redis_configured}
    if redis_configured:
        ping = state.buckets.ping if state.buckets.name == "redis" else state.event_queue.ping

        def redis_ping() -> None:
            if not ping():
                raise ConnectionError("no PONG")

        report["redis"].update(_probe(redis_ping))
    report["limiter"] = {
        "backend": state.buckets.name,
        "default_bucket": {"burst": state.default_bucket.burst, "drain": state.default_bucket.rate},
        "portals_paced_here": state.buckets.portals(),
        "operating_limit_seconds": state.budgets.limit,
    }
    report["event_queue"] = {"backend": state.event_queue.name}
    healthy = report["database"]["ok"] and (not redis_configured or report["redis"]["ok"])
    report["status"] = "ok" if healthy else "fail"
    return report, healthy
