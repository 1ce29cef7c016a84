"""Redis (BITRIX_REDIS_URL) is down: calls that need the shared limiter answer 503 REDIS_UNAVAILABLE
with Retry-After, never 500; Bitrix24's events are still stored (and handled in the web process)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import responses
from flask_bitrix24 import create_app, runtime

from tests.conftest import PORTAL_BASE, _drop_our_tables, service_url
from tests.faults.proxy import SeverableProxy
from tests.test_webhook import event_form

ROOT = Path(__file__).resolve().parents[2]


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


def _wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_redis_cut_and_restored_while_the_worker_runs(tmp_path, secret_key, redis_url, portal):
    """Redis goes away under a running ``flask bitrix24 worker`` (a real process) and the API: calls
    answer 503, deliveries are stored and handled in the web process; once Redis is back the same
    worker, never restarted, runs the next queued events again."""
    from flask_bitrix24.extensions import bitrix24

    db_url = service_url("TEST_DATABASE_URL")
    _drop_our_tables(db_url)
    parts = urlsplit(redis_url)
    proxy = SeverableProxy((parts.hostname or "127.0.0.1", parts.port or 6379))
    settings = {"BITRIX_SECRET_KEY": secret_key, "BITRIX_AUTH_DISABLED": "1", "BITRIX_WEBHOOK_BASE": "",
                "BITRIX_ALLOWED_HOSTS": "", "BITRIX_OUTBOUND_TOKEN": "", "BITRIX_CONFIG_CACHE_SECONDS": "0",
                "BITRIX_VERIFY_CONFIG": "0",
                "BITRIX_REDIS_URL": f"redis://127.0.0.1:{proxy.port}{parts.path}"}
    app = create_app({**settings, "TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url,
                      "BITRIX_AUTH_DISABLED": True, "BITRIX_CONFIG_CACHE_SECONDS": 0, "BITRIX_VERIFY_CONFIG": False})
    here, worker_log = [], tmp_path / "handled-by-worker"
    saved = {k: list(v) for k, v in bitrix24.hooks._handlers.items()}
    bitrix24.hooks.add_handler("*", lambda e: here.append(e.entity_id))
    worker_log.touch()
    worker = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "tests.faults.worker_app", "bitrix24", "worker", "--interval", "1"],
        # The job of event 1 is still finishing when Redis goes (RQ then quits its loop; the command
        # must start it again).
        cwd=ROOT, env=dict(os.environ, DATABASE_URL=db_url, HANDLED_LOG=str(worker_log), HANDLER_SECONDS="0.5",
                           **settings),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    by_worker = lambda: worker_log.read_text().split()  # noqa: E731
    c = app.test_client()

    def deliver(entity_id: str) -> None:
        r = c.post("/api/bitrix/webhook", data=event_form(token="tok-redis-cut-1", entity_id=entity_id))
        assert r.status_code == 200 and r.get_json()["result"]["duplicate"] is False, r.get_json()
        r.close()  # inline handlers run once the answer is closed

    try:
        assert c.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE,
                                                             "outbound_token": "tok-redis-cut-1"}).status_code == 201
        portal.add(responses.POST, PORTAL_BASE + "crm.contact.get.json", json={"result": {"ID": "7"}})
        deliver("1")
        assert _wait_for(lambda: by_worker() == ["1"]), "the worker never ran event 1"

        proxy.sever()
        r = c.get("/api/bitrix/clients/1/contacts/7")
        assert r.status_code == 503 and r.get_json()["error"] == "REDIS_UNAVAILABLE" and r.headers["Retry-After"]
        deliver("2")  # stored and run here: Bitrix24 would not send them again
        deliver("3")
        assert here == ["2", "3"]
        time.sleep(2)  # the worker meets the outage too

        proxy.restore()
        assert _wait_for(lambda: c.get("/api/bitrix/clients/1/contacts/7").status_code == 200, timeout=30)
        deliver("4")  # queued again, and the same worker process runs it
        came_back = _wait_for(lambda: by_worker() == ["1", "4"], timeout=90)
        if not came_back:
            worker.terminate()
            raise AssertionError(f"the worker did not come back: ran {by_worker()}, here {here}, "
                                 f"worker exit {worker.poll()}:\n{worker.communicate(timeout=30)[0][-3000:]}")
        assert here == ["2", "3"] and worker.poll() is None
        statuses = lambda: {e["entity_id"]: e["status"]  # noqa: E731
                            for e in c.get("/api/bitrix/clients/1/events").get_json()["result"]}
        assert _wait_for(lambda: statuses() == {"1": "done", "2": "done", "3": "done", "4": "done"}, timeout=30), \
            statuses()
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0]
        bitrix24.hooks._handlers.clear()
        bitrix24.hooks._handlers.update(saved)
        proxy.sever()
        with app.app_context():
            runtime(app).db.engine.dispose()
        _drop_our_tables(db_url)
    # RQ logs (with its traceback) when a Redis error ends its loop; the command then starts it again.
    assert "quitting" not in output or "starting it again" in output, output
