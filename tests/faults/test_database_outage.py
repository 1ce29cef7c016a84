"""PostgreSQL goes away and comes back while the API and the event receiver are in use.

A TCP proxy the test can sever sits between the app and PostgreSQL: severing it kills every open
connection (what a restart or failover does to a pool) and refuses new ones. During the outage every
answer is a 503 JSON with Retry-After, none a 500; afterwards the same app, not restarted, serves and
stores again (stale pooled connections are noticed and replaced).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest
from flask_bitrix24 import create_app

from tests.conftest import _drop_our_tables, service_url
from tests.faults.proxy import SeverableProxy


@pytest.fixture
def outage(secret_key):
    url = service_url("TEST_DATABASE_URL")
    _drop_our_tables(url)
    parts = urlsplit(url)
    proxy = SeverableProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    netloc = f"{parts.username + '@' if parts.username else ''}127.0.0.1:{proxy.port}"
    proxied = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    app = create_app({
        "TESTING": True, "SQLALCHEMY_DATABASE_URI": proxied, "BITRIX_SECRET_KEY": secret_key,
        "BITRIX_AUTH_DISABLED": True, "BITRIX_WEBHOOK_BASE": "", "BITRIX_ALLOWED_HOSTS": "",
        "BITRIX_OUTBOUND_TOKEN": "", "BITRIX_CONFIG_CACHE_SECONDS": 0, "BITRIX_VERIFY_CONFIG": False,
        "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"connect_timeout": 2}},
    })
    yield app, proxy
    proxy.sever()
    with app.app_context():
        from flask_bitrix24 import runtime

        runtime(app).db.engine.dispose()
    _drop_our_tables(url)


def event(ts: int) -> dict[str, str]:
    return {"event": "ONCRMDEALUPDATE", "data[FIELDS][ID]": str(ts), "ts": str(ts),
            "auth[domain]": "b24-test.bitrix24.com", "auth[application_token]": "tok-outage-1"}


def test_postgres_restart_is_503_then_heals_without_a_restart(outage):
    app, proxy = outage
    c = app.test_client()
    base = "https://b24-test.bitrix24.com/rest/1/s3cr3tW3bh00kXyZ/"
    assert c.post("/api/bitrix/clients/1/config", json={"webhook_base": base,
                                                         "outbound_token": "tok-outage-1"}).status_code == 201
    assert c.post("/api/bitrix/webhook", data=event(1)).status_code == 200

    proxy.sever()
    answers = [c.get("/api/bitrix/clients/1/config"), c.post("/api/bitrix/webhook", data=event(2)),
               c.get("/api/bitrix/clients/1/events"), c.get("/api/bitrix/health")]
    assert [r.status_code for r in answers] == [503, 503, 503, 503]
    for r in answers[:3]:
        assert r.get_json()["error"] == "DATABASE_UNAVAILABLE" and r.headers["Retry-After"] == "5"

    proxy.restore()
    assert c.get("/api/bitrix/clients/1/config").status_code == 200  # same app: the pool healed
    assert c.post("/api/bitrix/webhook", data=event(3)).status_code == 200
    stored = c.get("/api/bitrix/clients/1/events").get_json()
    assert sorted(e["entity_id"] for e in stored["result"]) == ["1", "3"]
    assert c.get("/api/bitrix/health").status_code == 200

    # A restart while nobody is calling: the pool still holds the dead connections, and the next
    # request must not be the one to find out (pool_pre_ping replaces them first).
    proxy.sever()
    proxy.restore()
    assert c.get("/api/bitrix/clients/1/config").status_code == 200
    assert c.post("/api/bitrix/webhook", data=event(4)).status_code == 200


def test_the_rq_worker_heals_after_a_postgres_restart(outage, redis_url):
    """Jobs that ran while PostgreSQL was away fail; the same worker process, with the database back,
    handles those events (their rows still say queued) without being restarted."""
    from flask_bitrix24.extensions import bitrix24

    app, proxy = outage
    handled = []
    saved = {k: list(v) for k, v in bitrix24.hooks._handlers.items()}
    bitrix24.hooks.add_handler("*", lambda e: handled.append(e.entity_id))
    try:
        from flask_bitrix24 import runtime

        rt = runtime(app)
        from flask_bitrix24.services.event_queue import make_event_queue

        rt.event_queue = make_event_queue(redis_url)  # this app, now with the RQ queue
        c = app.test_client()
        base = "https://b24-test.bitrix24.com/rest/1/s3cr3tW3bh00kXyZ/"
        c.post("/api/bitrix/clients/1/config", json={"webhook_base": base, "outbound_token": "tok-outage-1"})
        for ts in (11, 12, 13):
            assert c.post("/api/bitrix/webhook", data=event(ts)).status_code == 200
        assert rt.event_queue.queue.count == 3 and handled == []

        runner = app.test_cli_runner()
        proxy.sever()
        result = runner.invoke(args=["bitrix24", "worker", "--burst"])  # every job meets the outage
        assert result.exit_code == 0, result.output  # the worker itself keeps going
        assert handled == [] and "sweep failed" in result.output
        assert rt.event_queue.queue.failed_job_registry.count == 3  # each job ran, and met the outage
        proxy.restore()
        result = runner.invoke(args=["bitrix24", "worker", "--burst"])  # the same app, the same process
        assert result.exit_code == 0, result.output
        assert sorted(handled) == ["11", "12", "13"]
        stored = c.get("/api/bitrix/clients/1/events").get_json()["result"]
        assert {e["status"] for e in stored} == {"done"}
    finally:
        bitrix24.hooks._handlers.clear()
        bitrix24.hooks._handlers.update(saved)
