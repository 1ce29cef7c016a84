"""Redis (BITRIX_REDIS_URL) is down: calls that need the shared limiter answer 503 REDIS_UNAVAILABLE
with Retry-After, never 500; Bitrix24's events are still stored (and handled in the web process)."""

from __future__ import annotations

from tests.conftest import PORTAL_BASE
from tests.test_webhook import event_form


def test_redis_down_is_503_and_events_are_still_kept(make_app):
    app = make_app(BITRIX_WEBHOOK_BASE=PORTAL_BASE, BITRIX_REDIS_URL="redis://127.0.0.1:1/0",
                   BITRIX_OUTBOUND_TOKEN="tok-123456")
    c = app.test_client()
    r = c.get("/api/bitrix/clients/1/contacts/1")
    assert r.status_code == 503 and r.get_json()["error"] == "REDIS_UNAVAILABLE" and r.headers["Retry-After"] == "5"
    delivery = c.post("/api/bitrix/webhook", data=event_form(token="tok-123456"))
    assert delivery.status_code == 200 and delivery.get_json()["result"]["duplicate"] is False
    delivery.close()
    assert c.get("/api/bitrix/health").status_code == 503
