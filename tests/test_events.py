"""Events done right: handlers, retries, the event log, replay, the worker, tenants by member_id."""

from __future__ import annotations

import threading
import time

import pytest
from flask_bitrix24.extensions import bitrix24, db
from flask_bitrix24.models.standalone import BitrixEvent

from tests.conftest import PORTAL_BASE, portal_url
from tests.test_webhook import event_form


@pytest.fixture
def handlers():
    """Register handlers for one test only."""
    saved = {k: list(v) for k, v in bitrix24.hooks._handlers.items()}
    yield bitrix24
    bitrix24.hooks._handlers.clear()
    bitrix24.hooks._handlers.update(saved)


def rows(app):
    with app.app_context():
        return db.session.query(BitrixEvent).order_by(BitrixEvent.id).all()


def test_handler_gets_tenant_entity_and_fetch(app, configured, portal, handlers):
    seen = []

    @handlers.on("ONCRMCONTACTADD")
    def on_add(event):
        seen.append((event.name, event.client_id, event.entity_type, event.entity_id, event.fetch()["NAME"]))

    portal.post(portal_url("crm.contact.get"), json={"result": {"ID": "89", "NAME": "Ada"}})
    r = configured.post("/api/bitrix/webhook", data=event_form())
    assert r.status_code == 200
    r.close()  # the WSGI server closes the response after sending it: inline handlers run then
    assert seen == [("ONCRMCONTACTADD", 1, "CONTACT", "89", "Ada")]
    (row,) = rows(app)
    assert (row.status, row.attempts, row.last_error) == ("done", 1, None)
    assert row.processed_at is not None


def test_wildcard_and_other_events(app, configured, handlers):
    names = []
    handlers.on("*")(lambda e: names.append(("any", e.name)))
    handlers.on("ONCRMDEALUPDATE")(lambda e: names.append(("deal", e.entity_id)))
    configured.post("/api/bitrix/webhook", data=event_form(event="ONCRMDEALUPDATE", entity_id="5")).close()
    configured.post("/api/bitrix/webhook", data=event_form(event="ONCRMLEADADD", entity_id="6")).close()
    assert names == [("deal", "5"), ("any", "ONCRMDEALUPDATE"), ("any", "ONCRMLEADADD")]


def test_a_delivery_identical_to_one_already_handled_is_handled_again(app, configured, handlers):
    """Two changes of one record in the same second arrive identical (ts has whole seconds): the
    second is news once the first was handled, so the handlers run again, on the same row."""
    calls = []
    handlers.on("*")(lambda e: calls.append(e.id))
    for _ in range(3):
        r = configured.post("/api/bitrix/webhook", data=event_form())
        assert r.status_code == 200
        r.close()
    (row,) = rows(app)
    assert calls == [row.id] * 3 and row.status == "done"
    assert row.processed_at >= row.received_at


def test_a_delivery_identical_to_one_still_waiting_is_the_same_work(app, configured, handlers):
    calls = []

    def failing(event):
        calls.append(event.attempt)
        raise RuntimeError("downstream is down")

    handlers.on("*")(failing)
    configured.post("/api/bitrix/webhook", data=event_form()).close()
    assert [e.status for e in rows(app)] == ["retry"]
    r = configured.post("/api/bitrix/webhook", data=event_form())
    r.close()
    assert r.get_json()["result"]["duplicate"] is True
    assert calls == [1] and [e.status for e in rows(app)] == ["retry"]  # waits for its retry, once


def test_event_names_are_keyed_as_stored(app, configured, handlers):
    handlers.on("*")(lambda e: None)
    first = configured.post("/api/bitrix/webhook", data=event_form(event="onCrmContactAdd"))
    first.close()
    assert [e.event for e in rows(app)] == ["ONCRMCONTACTADD"]
    assert first.get_json()["result"]["duplicate"] is False


def test_a_client_without_its_own_token_is_verified_with_the_environments(make_app):
    app = make_app(BITRIX_OUTBOUND_TOKEN="env-token-123456")
    c = app.test_client()
    assert c.post("/api/bitrix/clients/4/config", json={"webhook_base": PORTAL_BASE}).status_code == 201
    debug = c.get("/api/bitrix/clients/4/config/debug").get_json()["result"]
    assert debug["outbound_token_source"] == "environment"
    ok = c.post("/api/bitrix/clients/4/webhook", data=event_form(token="env-token-123456"))
    assert ok.status_code == 200
    ok.close()
    assert c.post("/api/bitrix/clients/4/webhook", data=event_form(token="other-token")).status_code == 401
    assert [e.client_id for e in rows(app)] == [4]


def test_a_retry_is_not_run_before_its_backoff_even_when_asked_twice(make_app, handlers):
    """A second queue message for a waiting retry (a worker's start-up sweep re-queues what is queued)
    finds the event not due and leaves it alone."""
    app = make_app(BITRIX_OUTBOUND_TOKEN="env-token-1", BITRIX_EVENT_RETRY_BASE=30)
    attempts = []

    @handlers.on("ONCRMDEALUPDATE")
    def flaky(event):
        attempts.append(event.attempt)
        raise RuntimeError("downstream is down")

    app.test_client().post("/api/bitrix/webhook", data=event_form(token="env-token-1", event="ONCRMDEALUPDATE")).close()
    (row,) = rows(app)
    assert (row.status, row.attempts) == ("retry", 1)

    from flask_bitrix24.services.events import dispatch_event, run_event_job

    with app.app_context():
        dispatch_event(row.id)
        assert run_event_job(row.id) == "retry"
    (row,) = rows(app)
    assert (row.status, row.attempts, attempts) == ("retry", 1, [1])


def test_handler_raising_is_retried_with_backoff_then_kept_as_failed(make_app, handlers):
    app = make_app(BITRIX_OUTBOUND_TOKEN="env-token-1", BITRIX_EVENT_MAX_ATTEMPTS=3, BITRIX_EVENT_RETRY_BASE=0)
    attempts = []

    @handlers.on("ONCRMDEALUPDATE")
    def flaky(event):
        attempts.append(event.attempt)
        raise RuntimeError(f"downstream is down ({event.attempt})")

    client = app.test_client()
    client.post("/api/bitrix/webhook", data=event_form(token="env-token-1", event="ONCRMDEALUPDATE")).close()
    (row,) = rows(app)
    assert (row.status, row.attempts) == ("retry", 1) and "downstream is down (1)" in row.last_error
    assert row.next_attempt_at is not None

    from flask_bitrix24.services.events import run_due

    with app.app_context():
        assert run_due() == 1  # the retry is due (base 0 s)
        assert run_due() == 1
        assert run_due() == 0  # failed for good: nothing more to run
    (row,) = rows(app)
    assert (row.status, row.attempts) == ("failed", 3) and "downstream is down (3)" in row.last_error
    assert attempts == [1, 2, 3]

    # an operator fixes the cause and replays it
    handlers.hooks._handlers["ONCRMDEALUPDATE"] = [lambda e: attempts.append("fixed")]
    r = client.post(f"/api/bitrix/clients/1/events/{row.id}/replay")
    assert r.status_code == 404  # the event belongs to no client (it came with the environment's token)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["bitrix24", "events", "retry-failed"])
    assert "replayed 1 failed events" in result.output
    (row,) = rows(app)
    assert row.status == "done" and attempts[-1] == "fixed"


def test_backoff_grows(make_app, handlers):
    app = make_app(BITRIX_OUTBOUND_TOKEN="t-abcdef", BITRIX_EVENT_RETRY_BASE=30)
    handlers.on("*")(lambda e: 1 / 0)
    app.test_client().post("/api/bitrix/webhook", data=event_form(token="t-abcdef")).close()
    (row,) = rows(app)
    delay = (row.next_attempt_at - row.received_at).total_seconds()
    assert 23 < delay < 37  # 30 s +- 20% jitter
    assert row.last_error.startswith("ZeroDivisionError")


def test_event_log_endpoint_filters_and_pages(app, configured, handlers):
    handlers.on("ONCRMDEALUPDATE")(lambda e: 1 / 0)
    for i in range(5):
        configured.post("/api/bitrix/webhook", data=event_form(event="ONCRMDEALUPDATE", ts=str(i))).close()
    for i in range(3):
        configured.post("/api/bitrix/webhook", data=event_form(event="ONCRMLEADADD", ts=str(i))).close()
    body = configured.get("/api/bitrix/clients/1/events").get_json()
    assert body["total"] == 8 and len(body["result"]) == 8 and "next" not in body
    assert "application_token" not in str(body)
    retry = configured.get("/api/bitrix/clients/1/events?status=retry").get_json()
    assert retry["total"] == 5 and {e["event"] for e in retry["result"]} == {"ONCRMDEALUPDATE"}
    page = configured.get("/api/bitrix/clients/1/events?event=ONCRMLEADADD&limit=2").get_json()
    assert page["total"] == 3 and len(page["result"]) == 2 and page["next"] == 2
    assert configured.get("/api/bitrix/clients/2/events").get_json()["total"] == 0  # other tenants see nothing
    for bad in ("status=bogus", "limit=0", "limit=501", "start=-1", "event=a%20b", "x=1"):
        r = configured.get(f"/api/bitrix/clients/1/events?{bad}")
        assert r.status_code == 400, bad


def test_replay_endpoint_runs_handlers_again(app, configured, handlers):
    calls = []
    handlers.on("*")(lambda e: calls.append(e.id))
    configured.post("/api/bitrix/webhook", data=event_form()).close()
    (row,) = rows(app)
    r = configured.post(f"/api/bitrix/clients/1/events/{row.id}/replay")
    assert r.status_code == 200 and r.get_json()["result"]["status"] == "done"
    assert calls == [row.id, row.id]
    assert configured.post("/api/bitrix/clients/1/events/999/replay").status_code == 404
    assert configured.post("/api/bitrix/clients/1/events/abc/replay").status_code == 400


def test_cli_lists_and_replays(app, configured, handlers):
    handlers.on("*")(lambda e: None)
    configured.post("/api/bitrix/webhook", data=event_form()).close()
    runner = app.test_cli_runner()
    listing = runner.invoke(args=["bitrix24", "events", "list", "--client-id", "1"])
    assert "ONCRMCONTACTADD" in listing.output and "done" in listing.output and "1 of 1 events" in listing.output
    (row,) = rows(app)
    assert "done" in runner.invoke(args=["bitrix24", "events", "replay", str(row.id)]).output
    assert runner.invoke(args=["bitrix24", "events", "replay", "999"]).exit_code != 0


def test_oversized_event_body_is_413_and_stores_nothing(make_app):
    app = make_app(BITRIX_OUTBOUND_TOKEN="tok-123456", BITRIX_EVENT_MAX_BYTES=2048)
    form = event_form(token="tok-123456")
    form["data[FIELDS][NOTE]"] = "x" * 5000
    r = app.test_client().post("/api/bitrix/webhook", data=form)
    assert r.status_code == 413 and r.is_json and "BITRIX_EVENT_MAX_BYTES" in r.get_json()["error_description"]
    assert rows(app) == []


def test_unknown_domain_without_environment_token_is_refused(app, configured):
    r = configured.post("/api/bitrix/webhook", data=event_form(domain="stranger.bitrix24.com", token="tok-c1-abcdef"))
    assert r.status_code == 401 and rows(app) == []


def test_member_id_is_learnt_and_routes_after_a_domain_rename(app, configured):
    configured.post("/api/bitrix/webhook", data=event_form()).close()  # verified by domain + token
    renamed = event_form(domain="new-name.bitrix24.com", ts="2")
    r = configured.post("/api/bitrix/webhook", data=renamed)
    assert r.status_code == 200
    assert [e.client_id for e in rows(app)] == [1, 1]


def test_a_tenant_claiming_another_portals_member_id_cannot_block_its_events(app, configured):
    """Client 2 (its own portal, its own token) sends events claiming client 1's member_id: client
    1's genuine events must still be accepted and stored for client 1, none taken as duplicates."""
    victim_member = "d897063e1ce7c5eb9f04b9751eef5915"
    configured.post("/api/bitrix/clients/2/config", json={"webhook_base": "https://evil.bitrix24.com/rest/1/abcdef/",
                                                          "outbound_token": "tok-c2-zzzzzz"})
    forged = event_form(token="tok-c2-zzzzzz", domain="evil.bitrix24.com", ts="7")
    forged["auth[member_id]"] = victim_member
    assert configured.post("/api/bitrix/webhook", data=forged).status_code == 200  # its own event, stored for 2
    # it also pre-sends the victim's next event (same ID and ts) to its own per-client URL
    assert configured.post("/api/bitrix/clients/2/webhook", data=event_form(token="tok-c2-zzzzzz", ts="8")).status_code == 200
    genuine = configured.post("/api/bitrix/webhook", data=event_form(ts="8"))
    assert genuine.status_code == 200 and genuine.get_json()["result"]["duplicate"] is False
    assert sorted(e.client_id for e in rows(app)) == [1, 2, 2]
    # a learnt member_id is only a routing hint: the token decides, against every candidate
    later = configured.post("/api/bitrix/webhook", data=event_form(ts="9"))
    assert later.status_code == 200 and rows(app)[-1].client_id == 1
    assert configured.post("/api/bitrix/webhook", data=event_form(token="tok-c2-zzzzzz", ts="10")).status_code == 200
    assert rows(app)[-1].client_id == 2  # client 2's token names client 2, never client 1


def test_malformed_member_id_and_surrogates_are_not_stored(app, configured):
    bad = event_form()
    bad["auth[member_id]"] = "x" * 40
    assert configured.post("/api/bitrix/webhook", data=bad).status_code == 200
    with app.app_context():
        from flask_bitrix24.models.standalone import ClientCRMAuth

        assert db.session.query(ClientCRMAuth).one().member_id is None
    for body in ({"event": "X", "auth": {"application_token": "\ud800"}},
                 {"event": "ONCRMDEALADD", "auth": {"domain": "\ud800", "application_token": "tok-c1-abcdef"}},
                 {"event": "\ufb03" * 100, "auth": {"application_token": "tok-c1-abcdef"}}):
        r = configured.post("/api/bitrix/webhook", data=__import__("json").dumps(body).replace("\\\\", "\\"),
                            content_type="application/json")
        assert 400 <= r.status_code < 500, (body, r.get_data(as_text=True))


def test_concurrent_redeliveries_are_stored_once(make_app, tmp_path):

    app = make_app(BITRIX_OUTBOUND_TOKEN="tok-123456", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'c.db'}")
    results = []

    def send():
        client = app.test_client()
        r = client.post("/api/bitrix/webhook", data=event_form(token="tok-123456"))
        results.append(r.status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 8 and len(rows(app)) == 1


# --- with Redis: the RQ queue and the worker ---------------------------------------------------


def test_events_queued_while_the_worker_is_down_are_handled_when_it_is_back(make_app, handlers, redis_url):
    app = make_app(BITRIX_OUTBOUND_TOKEN="tok-123456", BITRIX_REDIS_URL=redis_url)
    handled = []
    handlers.on("*")(lambda e: handled.append(e.entity_id))
    client = app.test_client()
    for i in range(5):
        r = client.post("/api/bitrix/webhook", data=event_form(token="tok-123456", entity_id=str(i), ts=str(i)))
        assert r.status_code == 200
        r.close()
    # no worker yet: stored and queued, nothing handled
    assert handled == [] and {e.status for e in rows(app)} == {"queued"}
    queue = app.extensions["bitrix24"].event_queue
    assert queue.queue.count == 5

    # the worker comes back
    from flask_bitrix24.services.event_queue import app_job_class
    from rq import SimpleWorker

    # jobs name our function by its real module path, whatever the host's package is called
    assert {job.func_name for job in queue.queue.jobs} == {"flask_bitrix24.services.events.run_event_job"}
    SimpleWorker([queue.queue], connection=queue.connection, job_class=app_job_class(app)).work(burst=True)
    assert sorted(handled) == ["0", "1", "2", "3", "4"]
    assert {e.status for e in rows(app)} == {"done"}


def test_worker_command_sweeps_events_whose_queue_message_was_lost(make_app, handlers, redis_url):
    app = make_app(BITRIX_OUTBOUND_TOKEN="tok-123456", BITRIX_REDIS_URL=redis_url)
    handled = []
    handlers.on("*")(lambda e: handled.append(e.id))
    app.test_client().post("/api/bitrix/webhook", data=event_form(token="tok-123456")).close()
    app.extensions["bitrix24"].event_queue.queue.empty()  # the message is lost (Redis flushed, say)
    result = app.test_cli_runner().invoke(args=["bitrix24", "worker", "--burst"])
    assert result.exit_code == 0, result.output
    assert len(handled) == 1 and rows(app)[0].status == "done"


def test_worker_command_without_redis_runs_due_retries(make_app, handlers):
    app = make_app(BITRIX_OUTBOUND_TOKEN="tok-123456", BITRIX_EVENT_RETRY_BASE=0)
    outcomes = iter([RuntimeError("first try fails"), None])

    def handler(event):
        outcome = next(outcomes)
        if outcome:
            raise outcome

    handlers.on("*")(handler)
    app.test_client().post("/api/bitrix/webhook", data=event_form(token="tok-123456")).close()
    assert rows(app)[0].status == "retry"
    result = app.test_cli_runner().invoke(args=["bitrix24", "worker", "--burst"])
    assert result.exit_code == 0, result.output
    assert rows(app)[0].status == "done" and rows(app)[0].attempts == 2


def test_a_handler_that_breaks_the_session_still_gets_its_outcome_recorded(make_app, handlers):
    app = make_app(BITRIX_OUTBOUND_TOKEN="tok-123456")

    @handlers.on("*")
    def clumsy(event):
        # a failed flush leaves the session needing a rollback
        db.session.add(BitrixEvent(event="X", payload={}, dedupe_key=rows(app)[0].dedupe_key, status="done"))
        db.session.flush()

    app.test_client().post("/api/bitrix/webhook", data=event_form(token="tok-123456")).close()
    (row,) = rows(app)
    assert row.status == "retry" and "IntegrityError" in row.last_error


def test_a_run_that_died_mid_handler_is_taken_up_again(make_app, handlers):
    import datetime as dt

    app = make_app(BITRIX_OUTBOUND_TOKEN="tok-123456")
    handled = []
    handlers.on("*")(lambda e: handled.append(e.attempt))
    client = app.test_client()
    r = client.post("/api/bitrix/webhook", data=event_form(token="tok-123456"))  # not closed: handler not run yet
    event_id = r.get_json()["result"]["event_id"]
    with app.app_context():
        row = db.session.get(BitrixEvent, event_id)
        row.status, row.attempts = "processing", 1  # a worker claimed it, then was killed
        row.next_attempt_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=600)
        db.session.commit()
        from flask_bitrix24.services.events import EventBusy, replay, run_due

        with pytest.raises(EventBusy):
            replay(event_id)  # the lease still holds: no second run at the same time
        assert run_due() == 0
        row = db.session.get(BitrixEvent, event_id)
        row.next_attempt_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)  # the lease ran out
        db.session.commit()
        assert run_due() == 1
    (row,) = rows(app)
    assert row.status == "done" and handled == [2]


def test_an_event_whose_runs_keep_dying_ends_as_failed(make_app, handlers):
    import datetime as dt

    app = make_app(BITRIX_OUTBOUND_TOKEN="tok-123456", BITRIX_EVENT_MAX_ATTEMPTS=3)
    handlers.on("*")(lambda e: None)
    r = app.test_client().post("/api/bitrix/webhook", data=event_form(token="tok-123456"))
    event_id = r.get_json()["result"]["event_id"]
    with app.app_context():
        row = db.session.get(BitrixEvent, event_id)
        row.status, row.attempts = "processing", 3  # three runs died without an outcome
        row.next_attempt_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        db.session.commit()
        from flask_bitrix24.services.events import run_due

        run_due()
    (row,) = rows(app)
    assert row.status == "failed" and "without an outcome" in row.last_error


def test_the_stored_domain_is_the_tenants_not_what_the_sender_wrote(app, configured, handlers):
    handlers.on("*")(lambda e: None)
    form = event_form()
    form["auth[domain]"] = "evil.example.com"
    r = configured.post("/api/bitrix/clients/1/webhook", data=form)
    assert r.status_code == 200
    r.close()
    assert [e.portal_domain for e in rows(app)] == ["b24-test.bitrix24.com"]


def test_a_client_on_the_environments_portal_sees_its_events(make_app):
    """Demo mode, or one portal for every client: no config of its own, so the environment's portal
    and its events (stored without a client) are the client's; a client with its own portal, or any
    client once BITRIX_ENV_FALLBACK is off, does not see them."""
    app = make_app(BITRIX_WEBHOOK_BASE=PORTAL_BASE, BITRIX_OUTBOUND_TOKEN="tok-env-abcdef")
    c = app.test_client()
    r = c.post("/api/bitrix/webhook", data=event_form(token="tok-env-abcdef"))
    assert r.status_code == 200
    r.close()
    event_id = r.get_json()["result"]["event_id"]
    log = c.get("/api/bitrix/clients/1/events").get_json()
    assert [e["id"] for e in log["result"]] == [event_id] and log["result"][0]["client_id"] is None
    assert c.post(f"/api/bitrix/clients/1/events/{event_id}/replay").status_code == 200

    assert c.post("/api/bitrix/clients/2/config", json={"webhook_base": "https://b24-other.bitrix24.com/rest/1/abcdefgh/",
                                                        "outbound_token": "tok-c2-abcdef"}).status_code == 201
    assert c.get("/api/bitrix/clients/2/events").get_json()["total"] == 0
    assert c.post(f"/api/bitrix/clients/2/events/{event_id}/replay").status_code == 404

    strict = make_app(BITRIX_WEBHOOK_BASE=PORTAL_BASE, BITRIX_OUTBOUND_TOKEN="tok-env-abcdef", BITRIX_ENV_FALLBACK=False)
    sc = strict.test_client()
    assert sc.post("/api/bitrix/webhook", data=event_form(token="tok-env-abcdef", ts="1")).status_code == 200
    assert sc.get("/api/bitrix/clients/1/events").get_json()["total"] == 0


def test_handlers_calls_are_background_work(make_app, handlers, portal, monkeypatch):
    """What a handler calls yields the portal's bucket to interactive calls (see background_work)."""
    app = make_app(BITRIX_OUTBOUND_TOKEN="t-abcdef", BITRIX_WEBHOOK_BASE=PORTAL_BASE)
    portal.post(portal_url("crm.contact.get"), json={"result": {"ID": "89"}})
    caller, seen = app.extensions["bitrix24"].caller, []
    real = caller.call
    monkeypatch.setattr(caller, "call", lambda *a, **k: seen.append(k["background"]) or real(*a, **k))
    handlers.on("ONCRMCONTACTADD")(lambda event: event.fetch())
    app.test_client().post("/api/bitrix/webhook", data=event_form(token="t-abcdef")).close()
    with app.app_context():
        from flask_bitrix24 import bx_call

        bx_call("crm.contact.get", {"id": 89})  # a view's call, outside any handler
    assert seen == [True, False]


def test_event_statuses_are_defined_once():
    # A status is added in EventStatus only: the API's status filter, the CLI's --status choices
    # and the stored strings all follow it.
    from flask_bitrix24.cli import events_list_command
    from flask_bitrix24.controllers.schemas import EventsQuery
    from flask_bitrix24.models import EventStatus
    from flask_bitrix24.services import events

    values = {status.value for status in EventStatus}
    (one_of,) = EventsQuery().fields["status"].validators
    (option,) = [p for p in events_list_command.params if p.name == "status"]
    assert set(one_of.choices) == set(option.type.choices) == set(events.STATUSES) == values
    assert set(events.WAITING) < values
    assert all(type(s) is str for s in (*one_of.choices, *option.type.choices))  # plain strings, as stored
    assert EventStatus.DONE == "done" and f"{EventStatus.DONE}" == "done"


def test_the_rq_worker_is_started_again_when_it_quits_on_an_error(app, redis_url, monkeypatch):
    """RQ's work() ends on a Redis error met outside its wait for a job (and its teardown fails on
    it too): `flask bitrix24 worker` starts a new one, with backoff, until a stop is asked for."""
    import redis
    import rq
    from flask_bitrix24 import runtime
    from flask_bitrix24.services.event_queue import make_event_queue

    runtime(app).event_queue = make_event_queue(redis_url)
    runs, sleeps, listeners = [], [], []

    def work(self, burst=False, **kwargs):
        runs.append(self)
        if len(runs) < 3:
            self.subscribe()  # as RQ does first; a failed teardown would leave its listener running
            listeners.append(self.pubsub_thread)
            raise redis.exceptions.ConnectionError("Error 111 connecting. Connection refused.")
        self.stop_asked = True  # what SIGTERM does

    monkeypatch.setattr(rq.SimpleWorker, "work", work)
    monkeypatch.setattr("time.sleep", lambda s: sleeps.append(s))
    result = app.test_cli_runner().invoke(args=["bitrix24", "worker", "--interval", "3600"])
    assert result.exit_code == 0, result.output
    assert len(runs) == 3 and sleeps[:2] == [1.0, 2.0]
    assert result.output.count("starting it again") == 2
    for listener in listeners:  # each failed worker's listener was told to stop, not left behind
        listener.join(10)
        assert not listener.is_alive()


def _listening_worker(redis_url):
    import redis
    import rq

    connection = redis.Redis.from_url(redis_url)
    worker = rq.SimpleWorker([rq.Queue("listener-test", connection=connection)], connection=connection)
    worker.subscribe()  # RQ's channel for its stop and kill commands, read by a thread of its own
    assert worker.pubsub_thread.is_alive()
    return worker


def _returns_within(seconds: float, function, *args) -> bool:
    done = threading.Thread(target=function, args=args, daemon=True)
    done.start()
    done.join(seconds)
    return not done.is_alive()


def test_a_stopping_worker_ends_its_listener_thread(redis_url):
    from flask_bitrix24.cli import _stop_listening

    worker = _listening_worker(redis_url)
    thread = worker.pubsub_thread
    assert _returns_within(10, _stop_listening, worker)
    thread.join(10)
    assert not thread.is_alive() and worker.pubsub_thread is None  # the unsubscribe's reply woke it to end


def test_a_stopping_worker_does_not_wait_for_a_listener_that_went_back_to_sleep(redis_url):
    """The race in RQ's own unsubscribe: the reply wakes the listener before it is told to stop, and it
    goes back to waiting (up to RQ's 60 s) for a subscription. redis-py 8's stop() would join it for
    that long, so a SIGTERM took a minute; ours leaves that daemon thread to the process's exit."""
    from flask_bitrix24.cli import _stop_listening

    worker = _listening_worker(redis_url)
    worker.pubsub.unsubscribe()  # the reply reaches the listener while it is still meant to run
    deadline = time.monotonic() + 10
    while worker.pubsub.subscribed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not worker.pubsub.subscribed
    assert _returns_within(10, _stop_listening, worker)  # RQ's own unsubscribe: 60 s with redis-py 8.2
