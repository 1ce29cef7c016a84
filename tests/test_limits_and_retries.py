"""Pacing, the operating budget and retries by error class, with the portal mocked by ``responses``
and time faked (``FakeTime``): what is retried, what never is, how long we wait, what surfaces."""

from __future__ import annotations

import time
from urllib.parse import parse_qsl

import pytest
import requests
import responses
from flask_bitrix24.services.bitrix24_service import (
    OperatingLimit,
    PortalTimeout,
    RateLimited,
    ServerError,
    TransportError,
    bx_call,
)
from flask_bitrix24.services.caller import is_read
from flask_bitrix24.services.limiter import BucketParams, LocalBuckets

from tests.conftest import PORTAL_BASE, portal_url, refused, reset

LIMIT_503 = {"status": 503, "json": {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}}
BLOCKED_429 = {"status": 429, "json": {"error": "OPERATION_TIME_LIMIT",
                                       "error_description": "Method is blocked due to operation time limit."}}


@pytest.fixture
def env_app(make_app):
    return make_app(BITRIX_WEBHOOK_BASE=PORTAL_BASE)


def call(app, method, params=None, **kwargs):
    with app.app_context():
        return bx_call(method, params, **kwargs)


# --- the bucket ----------------------------------------------------------------------------------


def test_local_bucket_allows_the_burst_then_paces_under_the_drain_rate():
    now = [0.0]
    buckets = LocalBuckets(clock=lambda: now[0])
    params = BucketParams(burst=50, rate=2.0, safety=0.95)
    waits = [buckets.reserve("p", params) for _ in range(60)]
    # one place of the 50 (2%) is kept free for arrival jitter; past that each request waits one
    # more slot of 1 / (2 * 0.95) s
    assert waits[:49] == [0.0] * 49
    assert waits[49:] == pytest.approx([(i + 1) / 1.9 for i in range(11)])
    now[0] = 100.0  # drained
    assert buckets.reserve("p", params) == 0.0
    assert buckets.reserve("other-portal", params) == 0.0


def test_local_bucket_refusal_takes_no_place():
    buckets = LocalBuckets(clock=lambda: 0.0)
    params = BucketParams(burst=3, rate=1.0, safety=1.0)  # capacity 2 (one place kept free)
    assert [buckets.reserve("p", params) for _ in range(2)] == [0.0, 0.0]
    assert buckets.reserve("p", params, max_wait=0.5) == 1.0  # refused: over the bound
    assert buckets.level("p", params) == 2.0
    assert buckets.reserve("p", params) == 1.0  # taken this time


def test_fill_after_a_503_makes_the_next_call_wait():
    now = [0.0]
    buckets = LocalBuckets(clock=lambda: now[0])
    params = BucketParams(burst=50, rate=2.0)
    buckets.fill("p", params)
    assert buckets.reserve("p", params) == pytest.approx(1 / 1.98)


# --- pacing through bx_call ----------------------------------------------------------------------


def test_calls_past_the_burst_are_paced_not_refused(env_app, portal):
    portal.post(portal_url("crm.contact.list"), json={"result": [], "total": 0})
    for _ in range(55):
        call(env_app, "crm.contact.list")
    assert len(portal.calls) == 55
    assert env_app.fake_time.sleeps == pytest.approx([1 / 1.98] * 6)  # 49 at once, then 1.98 a second


def test_enterprise_plan_gets_its_own_bucket(make_app, portal):
    app = make_app()
    c = app.test_client()
    assert c.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE, "plan": "enterprise"}).status_code == 201
    assert c.get("/api/bitrix/clients/1/config").get_json()["result"]["rate_limit"] == {"burst": 250, "drain": 5.0}
    portal.post(portal_url("crm.contact.list"), json={"result": []})
    for _ in range(245):  # 250 less 2% kept free
        call(app, "crm.contact.list", client_id=1)
    assert app.fake_time.sleeps == []
    call(app, "crm.contact.list", client_id=1)
    assert app.fake_time.sleeps == pytest.approx([1 / 4.95])
    bad = c.post("/api/bitrix/clients/1/config", json={"rate_limit": {"burst": 0, "drain": 2}})
    assert bad.status_code == 400 and bad.get_json()["field"] == "rate_limit.burst"


def test_the_bound_turns_a_long_queue_into_429_with_retry_after(make_app, portal):
    app = make_app(BITRIX_WEBHOOK_BASE=PORTAL_BASE, BITRIX_MAX_WAIT=2.0, BITRIX_RATE_BURST=3)
    # Many requests at the same moment (as from many workers): waits queue up, time stands still.
    app.extensions["bitrix24"].caller.sleep = app.fake_time.sleeps.append
    portal.post(portal_url("crm.contact.list"), json={"result": []})
    client = app.test_client()
    codes = [client.get("/api/bitrix/clients/1/contacts").status_code for _ in range(8)]
    assert codes[:3] == [200, 200, 200] and codes[-1] == 429
    r = client.get("/api/bitrix/clients/1/contacts")
    assert r.get_json()["error"] == "QUERY_LIMIT_EXCEEDED" and int(r.headers["Retry-After"]) >= 1
    assert len(portal.calls) < 8  # refused locally, the portal never saw the extra requests


# --- retries by error class ----------------------------------------------------------------------


def test_503_is_retried_until_it_passes(env_app, portal):
    portal.post(portal_url("crm.contact.add"), **LIMIT_503)
    portal.post(portal_url("crm.contact.add"), **LIMIT_503)
    portal.post(portal_url("crm.contact.add"), json={"result": 7})
    assert call(env_app, "crm.contact.add", {"fields": {"NAME": "A"}})["result"] == 7
    assert len(portal.calls) == 3


def test_503_retries_end_with_the_real_error(env_app, portal):
    portal.post(portal_url("crm.contact.get"), **LIMIT_503)
    with pytest.raises(RateLimited) as info:
        call(env_app, "crm.contact.get", {"id": 1})
    assert info.value.code == "QUERY_LIMIT_EXCEEDED" and info.value.http_status == 503
    assert len(portal.calls) == 6  # BITRIX_RETRY_ATTEMPTS
    waits = env_app.fake_time.sleeps
    assert all(0 <= w <= 8.6 for w in waits) and sum(waits) <= 30  # jittered, bounded


@pytest.mark.parametrize("failure", [requests.exceptions.ReadTimeout("read timed out"),
                                     reset()])
def test_an_add_that_may_have_reached_the_portal_is_never_repeated(env_app, portal, failure):
    portal.post(portal_url("crm.deal.add"), body=failure)
    portal.post(portal_url("crm.deal.add"), json={"result": 1})
    with pytest.raises(TransportError) as info:
        call(env_app, "crm.deal.add", {"fields": {"TITLE": "once"}})
    assert len(portal.calls) == 1
    assert info.value.sent is True
    assert info.value.code == "OUTCOME_UNKNOWN" and "may have been created" in info.value.description


def test_an_add_whose_outcome_is_unknown_is_a_502_saying_so(env_app, portal):
    portal.post(portal_url("crm.contact.add"), body=reset())
    r = env_app.test_client().post("/api/bitrix/clients/1/contacts", json={"fields": {"NAME": "Ann"}})
    assert r.status_code == 502 and r.get_json()["error"] == "OUTCOME_UNKNOWN"
    assert "may have been created" in r.get_json()["error_description"] and len(portal.calls) == 1
    # a read that fails the same way is an unreachable portal, not an unknown outcome
    portal.post(portal_url("crm.contact.get"), body=reset())
    r = env_app.test_client().get("/api/bitrix/clients/1/contacts/5")
    assert r.status_code == 502 and r.get_json()["error"] == "PORTAL_UNREACHABLE"


def test_an_add_that_never_left_is_retried(env_app, portal):
    portal.post(portal_url("crm.deal.add"), body=refused())
    portal.post(portal_url("crm.deal.add"), json={"result": 5})
    assert call(env_app, "crm.deal.add", {"fields": {"TITLE": "x"}})["result"] == 5
    assert len(portal.calls) == 2


def test_an_add_is_not_repeated_on_5xx(env_app, portal):
    portal.post(portal_url("crm.lead.add"), status=500, json={"error": "INTERNAL_SERVER_ERROR", "error_description": ""})
    with pytest.raises(ServerError) as info:
        call(env_app, "crm.lead.add", {"fields": {"TITLE": "x"}})
    assert len(portal.calls) == 1 and info.value.code == "OUTCOME_UNKNOWN"


@pytest.mark.parametrize("method", ["crm.contact.get", "crm.contact.list", "crm.contact.update", "profile"])
def test_reads_and_updates_are_retried_on_timeouts_and_5xx(env_app, portal, method):
    portal.post(portal_url(method), body=requests.exceptions.ReadTimeout("read timed out"))
    portal.post(portal_url(method), status=502, body="<html>bad gateway</html>")
    portal.post(portal_url(method), json={"result": True})
    assert call(env_app, method, {"id": 1})["result"] is True
    assert len(portal.calls) == 3


def test_directory_reads_are_reads_and_the_link_writes_are_not():
    # the action is the last segment: crm.status.entity.items is a read, crm.deal.contact.items.set a write
    for method in ("crm.userfield.types", "crm.status.entity.types", "crm.status.entity.items"):
        assert is_read(method), method
    for method in ("crm.deal.contact.items.set", "crm.deal.contact.items.delete", "crm.deal.contact.add"):
        assert not is_read(method), method


@pytest.mark.parametrize("method", ["crm.userfield.types", "crm.status.entity.types", "crm.status.entity.items"])
def test_a_directory_read_after_a_dropped_connection_is_repeated_not_outcome_unknown(env_app, portal, method):
    portal.post(portal_url(method), body=reset())
    portal.post(portal_url(method), json={"result": [{"ID": "string"}]})
    assert call(env_app, method)["result"] == [{"ID": "string"}]
    assert len(portal.calls) == 2


def test_userfield_types_after_a_dropped_connection_is_answered(env_app, portal):
    portal.post(portal_url("crm.userfield.types"), body=reset())
    portal.post(portal_url("crm.userfield.types"), json={"result": [{"ID": "string"}]})
    r = env_app.test_client().get("/api/bitrix/clients/1/userfield-types")
    assert r.status_code == 200 and r.get_json()["result"] == [{"ID": "string"}], r.get_json()


def test_a_repeated_delete_that_finds_nothing_succeeded_the_first_time(env_app, portal):
    portal.post(portal_url("crm.deal.delete"), body=requests.exceptions.ReadTimeout("read timed out"))
    portal.post(portal_url("crm.deal.delete"), status=400, json={"error": "", "error_description": "Not found"})
    assert call(env_app, "crm.deal.delete", {"id": 3}) == {"result": True}


def test_timeouts_surface_after_the_retries(env_app, portal):
    portal.post(portal_url("crm.contact.get"), body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(PortalTimeout):
        call(env_app, "crm.contact.get", {"id": 1})
    assert len(portal.calls) == 6


def test_client_errors_are_not_retried(env_app, portal):
    portal.post(portal_url("crm.contact.get"), status=400, json={"error": "", "error_description": "Not found"})
    portal.post(portal_url("crm.deal.get"), status=401, json={"error": "INVALID_CREDENTIALS", "error_description": "x"})
    from flask_bitrix24.services.bitrix24_service import NotFound, PortalAuthFailed

    for method, error in (("crm.contact.get", NotFound), ("crm.deal.get", PortalAuthFailed)):
        with pytest.raises(error):
            call(env_app, method, {"id": 1})
    assert len(portal.calls) == 2


# --- the operating budget ------------------------------------------------------------------------


def test_operation_time_limit_is_waited_out_within_the_bound(env_app, portal):
    now = env_app.fake_time.time()
    portal.post(portal_url("crm.deal.list"), json={"result": [], "time": {"operating": 470, "operating_reset_at": now + 20}})
    portal.post(portal_url("crm.deal.list"), **BLOCKED_429)
    portal.post(portal_url("crm.deal.list"), json={"result": [], "time": {"operating": 10}})
    call(env_app, "crm.deal.list", max_wait=600)
    assert call(env_app, "crm.deal.list", max_wait=600)["result"] == []
    assert len(portal.calls) == 3
    assert max(env_app.fake_time.sleeps) == pytest.approx(21, abs=0.5)  # until a second past operating_reset_at


def test_operation_time_limit_surfaces_past_the_bound(env_app, portal):
    now = env_app.fake_time.time()
    portal.post(portal_url("crm.deal.list"), json={"result": [], "time": {"operating": 470, "operating_reset_at": now + 300}})
    portal.post(portal_url("crm.deal.list"), **BLOCKED_429)
    call(env_app, "crm.deal.list")
    with pytest.raises(OperatingLimit) as info:
        call(env_app, "crm.deal.list", max_wait=30)
    assert info.value.code == "OPERATION_TIME_LIMIT" and info.value.retry_after == pytest.approx(301, abs=5)
    # the method stays blocked: the next call is refused without asking the portal
    with pytest.raises(OperatingLimit):
        call(env_app, "crm.deal.list", max_wait=30)
    assert len(portal.calls) == 2
    portal.post(portal_url("crm.deal.get"), json={"result": {"ID": "1"}})
    assert call(env_app, "crm.deal.get", {"id": 1})["result"] == {"ID": "1"}  # other methods still work


def test_api_answers_429_with_retry_after_from_operating_reset_at(make_app, portal):
    app = make_app(BITRIX_WEBHOOK_BASE=PORTAL_BASE)
    now = app.fake_time.time()
    portal.post(portal_url("crm.lead.list"), json={"result": [], "time": {"operating": 475, "operating_reset_at": now + 240}})
    portal.post(portal_url("crm.lead.list"), **BLOCKED_429)
    client = app.test_client()
    assert client.get("/api/bitrix/clients/1/leads").status_code == 200
    r = client.get("/api/bitrix/clients/1/leads")
    assert r.status_code == 429 and r.get_json()["error"] == "OPERATION_TIME_LIMIT"
    assert 235 <= int(r.headers["Retry-After"]) <= 241


def _timed(now, operating, reset_in, processing=0.0):
    return {"start": now, "finish": now, "processing": processing, "operating": operating,
            "operating_reset_at": int(now + reset_in)}


def test_a_call_that_would_pass_the_operating_limit_waits_for_the_reset_instead_of_earning_a_429(env_app, portal):
    now = env_app.fake_time.time()
    portal.post(portal_url("crm.deal.update"), json={"result": True, "time": _timed(now, 479.8, 40, 0.5)})
    portal.post(portal_url("crm.deal.update"), json={"result": True, "time": _timed(now + 41, 100.5, 60, 0.5)})
    call(env_app, "crm.deal.update", {"id": 1, "fields": {"TITLE": "a"}})
    assert call(env_app, "crm.deal.update", {"id": 1, "fields": {"TITLE": "b"}}, max_wait=600)["result"] is True
    assert len(portal.calls) == 2  # the second was sent once, after the oldest bucket dropped out
    assert max(env_app.fake_time.sleeps) == pytest.approx(41, abs=1)


def test_an_interactive_call_that_cannot_fit_within_its_bound_is_refused_without_asking_the_portal(env_app, portal):
    now = env_app.fake_time.time()
    portal.post(portal_url("crm.deal.update"), json={"result": True, "time": _timed(now, 479.8, 300, 0.5)})
    call(env_app, "crm.deal.update", {"id": 1, "fields": {"TITLE": "a"}})
    with pytest.raises(OperatingLimit) as info:
        call(env_app, "crm.deal.update", {"id": 1, "fields": {"TITLE": "b"}}, max_wait=30)
    assert len(portal.calls) == 1 and info.value.retry_after == pytest.approx(301, abs=2)
    assert "crm.deal.update" in info.value.description


def _costly_batch(now, keys, method_start, step, reset_in, errors=None):
    """A batch's answer whose commands each add ``step`` seconds to the method's running total."""
    times = {k: _timed(now + i * 0.01, method_start + i * step, reset_in, step) for i, k in enumerate(keys)}
    return {"result": {"result": {k: True for k in keys if k not in (errors or {})}, "result_error": errors or [],
                       "result_total": [], "result_next": [], "result_time": times},
            "time": _timed(now, 0, reset_in)}


def test_a_batch_learns_each_commands_cost_sends_what_fits_and_the_rest_after_the_reset(env_app, portal):
    from flask_bitrix24.services.bulk import bulk_write

    now = env_app.fake_time.time()
    first = [f"w{i}" for i in range(50)]
    portal.post(portal_url("batch"), json=_costly_batch(now, first, 435.5, 0.5, 100))  # 435.5 .. 460.0
    portal.post(portal_url("batch"), json=_costly_batch(now + 0.5, [f"w{i}" for i in range(50, 66)], 460.5, 0.5, 99.5))
    portal.post(portal_url("batch"), json=_costly_batch(now + 101, [f"w{i}" for i in range(66, 80)], 5.5, 0.5, 500))
    caller = env_app.extensions["bitrix24"].caller
    events, on_event = [], caller.on_event
    caller.on_event = lambda name, info: (events.append((name, info)), on_event(name, info))
    with env_app.app_context():
        outcomes = bulk_write("crm.contact", [{"id": i + 1, "fields": {"NAME": "x"}} for i in range(80)])
    assert all(o.error is None for o in outcomes)
    # the operating gauge follows each batch's last command (bitrix24_operating_seconds)
    assert [info["seconds"] for name, info in events if name == "operating"] == [460.0, 468.0, 10.0, 12.0]
    # bulk work may use 468 s (97.5% of 480): after 460 s there was room for 16 more updates at 0.5 s, which
    # went at once; the other 14 waited for the reset, where the oldest bucket (not one of ours) dropped out
    # by an amount nobody tells: the fewest worth a request of their own (MIN_PART, 10) found out, then the rest
    bodies = [c.request.body if isinstance(c.request.body, str) else c.request.body.decode() for c in portal.calls]
    sent = [[k for k, _ in parse_qsl(body) if k.startswith("cmd[")] for body in bodies]
    assert [len(keys) for keys in sent] == [50, 16, 10, 4] and sent[1][0] == "cmd[w50]" and sent[2][0] == "cmd[w66]"
    assert max(env_app.fake_time.sleeps) == pytest.approx(100, abs=1)
    assert [name for name, _ in events].count("operating_wait") == 1  # the wait is reported (metrics, CLI)
    budget = env_app.extensions["bitrix24"].budgets.snapshot()
    assert budget[f"{PORTAL_BASE.split('/')[2]} crm.contact.update"]["cost"] == pytest.approx(0.5)


def test_the_cost_is_what_each_command_was_charged_not_the_steps_other_batches_share(env_app, portal):
    """Batches side by side run the method on the portal at once: each command's ``operating`` counts the
    others' too (here three more batches, so steps of 2 s), while its own ``processing`` says what it cost."""
    from flask_bitrix24.services.bulk import bulk_write

    now = env_app.fake_time.time()
    keys = [f"w{i}" for i in range(50)]
    times = {k: {**_timed(now + i * 0.01, 2.0 * (i + 1), 500), "processing": 0.5} for i, k in enumerate(keys)}
    portal.post(portal_url("batch"), json={"result": {"result": {k: True for k in keys}, "result_error": [],
                                                      "result_total": [], "result_next": [], "result_time": times}})
    with env_app.app_context():
        assert all(o.error is None for o in bulk_write("crm.contact", [{"id": i + 1} for i in range(50)]))
    budget = env_app.extensions["bitrix24"].budgets.snapshot()
    assert budget[f"{PORTAL_BASE.split('/')[2]} crm.contact.update"]["cost"] == pytest.approx(0.5)


def test_commands_the_portal_refused_for_the_budget_are_sent_again_after_the_reset(env_app, portal):
    from flask_bitrix24.services.bulk import bulk_write

    now = env_app.fake_time.time()
    refused_error = {"error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked due to operation time limit."}
    keys = [f"w{i}" for i in range(4)]
    # another app spent the budget: the last two commands were refused before they ran
    portal.post(portal_url("batch"), json=_costly_batch(now, keys, 470, 0.0, 30,
                                                        errors={"w2": refused_error, "w3": refused_error}))
    portal.post(portal_url("batch"), json=_costly_batch(now + 31, ["w2", "w3"], 10, 0.0, 500))
    with env_app.app_context():
        outcomes = bulk_write("crm.contact", [{"id": i + 1, "fields": {"NAME": "x"}} for i in range(4)])
    assert [o.error for o in outcomes] == [None] * 4
    body = portal.calls[1].request.body
    resent = {k for k, _ in parse_qsl(body if isinstance(body, str) else body.decode()) if k.startswith("cmd[")}
    assert resent == {"cmd[w2]", "cmd[w3]"}  # only the refused ones, which never ran
    assert max(env_app.fake_time.sleeps) == pytest.approx(30, abs=1)


# --- Redis-shared bucket ---------------------------------------------------------------------------


def drained_since(rate: float):
    """``near(expected, slack)`` for a Redis bucket, which drains by Redis' own clock while a test runs (on a
    loaded machine, tens of milliseconds between calls): ``slack`` plus what drained since this was made."""
    started = time.monotonic()

    def near(expected: float, slack: float = 0.05):
        return pytest.approx(expected, abs=slack + rate * (time.monotonic() - started))

    return near


def test_redis_bucket_has_the_same_semantics(redis_url):
    from flask_bitrix24.services.limiter import RedisBuckets

    buckets = RedisBuckets(redis_url, prefix="test:bucket:")
    key = f"p-{id(buckets)}"
    params = BucketParams(burst=6, rate=1.0, safety=1.0)  # capacity 5
    near = drained_since(params.rate)
    waits = [buckets.reserve(key, params) for _ in range(7)]
    assert waits[:5] == [0.0] * 5
    assert waits[5] == near(1.0) and waits[6] == near(2.0)
    assert buckets.reserve(key, params, max_wait=0.5) > 0.5
    assert buckets.level(key, params) == near(7, slack=0.1)  # the refused one took no place


def test_waiting_never_passes_the_bound(make_app, portal):
    app = make_app(BITRIX_WEBHOOK_BASE=PORTAL_BASE, BITRIX_MAX_WAIT=10.0, BITRIX_RETRY_ATTEMPTS=50)
    portal.post(portal_url("crm.contact.get"), **LIMIT_503)
    for _ in range(30):
        app.fake_time.sleeps.clear()
        with pytest.raises(RateLimited):
            call(app, "crm.contact.get", {"id": 1})
        assert sum(app.fake_time.sleeps) <= 10.0


def test_after_the_reset_time_passed_a_429_waits_a_whole_bucket(env_app, portal):
    now = env_app.fake_time.time()
    portal.post(portal_url("crm.deal.list"), json={"result": [], "time": {"operating": 470, "operating_reset_at": now + 5}})
    portal.post(portal_url("crm.deal.list"), **BLOCKED_429)
    portal.post(portal_url("crm.deal.list"), **BLOCKED_429)
    portal.post(portal_url("crm.deal.list"), json={"result": []})
    call(env_app, "crm.deal.list")
    assert call(env_app, "crm.deal.list", max_wait=600)["result"] == []
    long_waits = [w for w in env_app.fake_time.sleeps if w >= 1]
    assert long_waits[0] == pytest.approx(6, abs=0.5) and long_waits[1] == pytest.approx(60, abs=0.5)


def test_a_delete_not_found_after_a_refused_connection_is_not_called_done(env_app, portal):
    from flask_bitrix24.services.bitrix24_service import NotFound

    portal.post(portal_url("crm.deal.delete"), body=refused())
    portal.post(portal_url("crm.deal.delete"), status=400, json={"error": "", "error_description": "Not found"})
    with pytest.raises(NotFound):  # the first attempt never reached the portal: it really is not there
        call(env_app, "crm.deal.delete", {"id": 3})


def test_bulk_write_waits_out_the_portals_own_limit_before_looking_after_a_timeout(make_app, portal):
    from flask_bitrix24.services.bulk import bulk_write

    app = make_app(BITRIX_WEBHOOK_BASE=PORTAL_BASE, BITRIX_TIMEOUT_READ=30)
    portal.post(portal_url("batch"), body=requests.exceptions.ReadTimeout("read timed out"))
    portal.post(portal_url("crm.contact.list"), json={"result": []})  # the marker lookup: nothing made
    portal.post(portal_url("batch"), json={"result": {"result": {"w0": 11}, "result_error": [], "result_total": [],
                                                      "result_next": [], "result_time": []}})
    with app.app_context():
        (outcome,) = bulk_write("crm.contact", [{"fields": {"NAME": "Slow"}}])
    assert outcome.error is None and outcome.id == 11
    assert [c.request.url.rsplit("/", 1)[-1] for c in portal.calls] == ["batch.json", "crm.contact.list.json", "batch.json"]
    assert 35 in [round(w) for w in app.fake_time.sleeps]  # 65 s portal limit - 30 s read timeout


def test_bx_batch_keeps_the_results_of_requests_that_ran_when_a_later_one_fails(env_app, portal):
    from flask_bitrix24.services.bitrix24_service import PortalAuthFailed, bx_batch

    first = {f"c{i}": i for i in range(50)}
    portal.post(portal_url("batch"), json={"result": {"result": first, "result_error": [], "result_total": [],
                                                      "result_next": [], "result_time": []}})
    portal.post(portal_url("batch"), status=401, json={"error": "INVALID_CREDENTIALS", "error_description": "x"})
    with env_app.app_context():
        items = bx_batch([("crm.contact.add", {"fields": {"NAME": f"N{i}"}}) for i in range(60)])
    assert [item.result for item in items[:50]] == list(range(50))
    assert all(isinstance(item.error, PortalAuthFailed) for item in items[50:])


def test_was_it_sent_is_decided_by_the_exception_type_not_its_text(env_app, portal):
    # The words "Connection refused" in a reset's text must not make an add look unsent.
    misleading = requests.exceptions.ConnectionError(
        __import__("urllib3").exceptions.ProtocolError("Connection refused?", ConnectionResetError(104, "x")))
    portal.post(portal_url("crm.deal.add"), body=misleading)
    portal.post(portal_url("crm.deal.add"), json={"result": 9})
    with pytest.raises(TransportError) as info:
        call(env_app, "crm.deal.add", {"fields": {"TITLE": "once"}})
    assert info.value.code == "OUTCOME_UNKNOWN" and len(portal.calls) == 1
    # a refused connection (NewConnectionError inside), whatever its text: never sent, so retried
    portal.reset()
    portal.post(portal_url("crm.deal.add"), body=refused())
    portal.post(portal_url("crm.deal.add"), json={"result": 10})
    assert call(env_app, "crm.deal.add", {"fields": {"TITLE": "x"}})["result"] == 10
    assert len(portal.calls) == 2


# --- interactive calls ahead of background work ------------------------------------------------


@pytest.mark.parametrize("kind", ["local", "redis"])
def test_background_work_leaves_a_fifth_of_the_bucket_and_books_nothing_ahead(kind, request):
    from flask_bitrix24.services.limiter import RedisBuckets

    params = BucketParams(burst=50, rate=2.0, safety=1.0)  # capacity 49, background up to 39
    if kind == "redis":
        buckets, key = RedisBuckets(request.getfixturevalue("redis_url"), prefix="test:bucket:"), f"p-{id(request)}"
        near = drained_since(params.rate)
    else:
        buckets, key, near = LocalBuckets(clock=lambda: 0.0), "p", pytest.approx
    assert [buckets.try_background(key, params) for _ in range(39)] == [0.0] * 39
    assert buckets.try_background(key, params) == near(0.5)  # not taken...
    assert buckets.level(key, params) == near(39)  # ...nothing booked
    # The views people wait on still find ten places free.
    assert [buckets.reserve(key, params) for _ in range(10)] == [0.0] * 10
    # Past that they queue, and background work, booking nothing, finds itself further behind.
    assert buckets.reserve(key, params) == near(0.5)
    assert buckets.try_background(key, params) == near(6.0)


def test_an_interactive_call_never_waits_behind_a_bulk_job(env_app, portal):
    portal.post(portal_url("crm.contact.list"), json={"result": [], "total": 0})
    portal.post(portal_url("crm.contact.get"), json={"result": {"ID": "1"}})
    fake = env_app.fake_time
    with env_app.app_context():
        from flask_bitrix24 import background_work

        with background_work():  # a sync job's 45 calls
            for _ in range(45):
                bx_call("crm.contact.list")
        background_waits = list(fake.sleeps)
        fake.sleeps.clear()
        for _ in range(5):  # meanwhile, someone opens a contact
            bx_call("crm.contact.get", {"id": 1})
    # The job took the first 39 places (49 of 50, less a fifth) at once, then waited a drain slot for
    # each further call; the person's calls found places free and never waited.
    assert len(background_waits) == 6 and all(w > 0 for w in background_waits)
    assert fake.sleeps == []


def test_bulk_helpers_and_event_handlers_are_background_work(env_app, portal, monkeypatch):
    seen = []
    caller = env_app.extensions["bitrix24"].caller
    real = caller.call
    monkeypatch.setattr(caller, "call", lambda *a, **k: seen.append((a[1], k["background"])) or real(*a, **k))
    portal.post(portal_url("crm.contact.get"), json={"result": {"ID": "1"}})
    portal.post(portal_url("crm.contact.list"), json={"result": [{"ID": "1"}], "total": 1})
    portal.post(portal_url("batch"), json={"result": {"result": {"a": {"ID": "1"}}, "result_error": []}})
    with env_app.app_context():
        from flask_bitrix24 import bx_batch, bx_list_all

        bx_call("crm.contact.get", {"id": 1})
        list(bx_list_all("crm.contact.list", mode="offset"))
        bx_batch({"a": ("crm.contact.get", {"id": 1})})
    assert seen == [("crm.contact.get", False), ("crm.contact.list", True), ("batch", True)]


def _batch_answer(request):
    """A batch that creates every w<N> command as record 1000+N."""
    from flask_bitrix24.services.wire import parse_php_form

    cmd = parse_php_form(request.body if isinstance(request.body, str) else request.body.decode())["cmd"]
    return 200, {}, __import__("json").dumps({"result": {"result": {k: 1000 + int(k[1:]) for k in cmd},
                                                         "result_error": []}})


def test_a_bulk_write_stops_at_its_deadline_and_says_what_was_not_sent(make_app, portal):
    from flask_bitrix24.services.bulk import bulk_write

    app = make_app(BITRIX_WEBHOOK_BASE=PORTAL_BASE, BITRIX_BULK_MAX_WAIT=15)

    def slow_batch(request):  # each batch request takes the portal 10 s
        app.fake_time.now += 10
        return _batch_answer(request)

    portal.add_callback(responses.POST, portal_url("batch"), callback=slow_batch)
    with app.app_context():
        outcomes = bulk_write("crm.contact", [{"fields": {"NAME": f"N{i}"}} for i in range(150)])
    made = [o for o in outcomes if o.error is None]
    assert len(made) == 100 and [o.id for o in made] == [1000 + i for i in range(100)]
    assert {o.error.code for o in outcomes[100:]} == {"BULK_DEADLINE"}  # the third batch was never sent
    assert sum(1 for c in portal.calls if c.request.url.endswith("/batch.json")) == 2


def test_a_bulk_write_that_meets_a_busy_origin_answers_per_item(make_app, portal, monkeypatch):
    """Another request still creating the same ORIGIN_IDs (the lock stays taken): what was made is
    reported and the rest says BUSY, instead of one 503 for the whole request."""
    from flask_bitrix24 import runtime
    from flask_bitrix24.services.bulk import bulk_write
    from flask_bitrix24.services.locks import LockTimeout

    app = make_app(BITRIX_WEBHOOK_BASE=PORTAL_BASE)
    portal.add_callback(responses.POST, portal_url("batch"), callback=_batch_answer)
    portal.post(portal_url("crm.contact.list"), json={"result": []})
    locks = runtime(app).locks
    real = locks.hold

    def hold(keys, timeout=30.0):
        if any(k.endswith(":ext-55") for k in keys):
            raise LockTimeout("'origin:...:ext-55' stayed locked for 30 s")
        return real(keys, timeout)

    monkeypatch.setattr(locks, "hold", hold)
    with app.app_context():
        outcomes = bulk_write("crm.contact", [{"fields": {"NAME": "x", "ORIGIN_ID": f"ext-{i}"}} for i in range(60)])
    assert [o.id for o in outcomes[:50]] == [1000 + i for i in range(50)]
    assert {o.error.code for o in outcomes[50:]} == {"BUSY"}


def test_updates_done_before_a_later_failure_of_their_batch_are_reported_done(env_app, portal):
    from flask_bitrix24.services.bulk import bulk_write

    now = env_app.fake_time.time()
    refused_error = {"error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked due to operation time limit."}
    keys = [f"w{i}" for i in range(4)]
    portal.post(portal_url("batch"), json=_costly_batch(now, keys, 470, 0.0, 30,
                                                        errors={"w2": refused_error, "w3": refused_error}))
    portal.post(portal_url("batch"), status=401,
                json={"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"})
    with env_app.app_context():
        outcomes = bulk_write("crm.contact", [{"id": i + 1, "fields": {"NAME": "x"}} for i in range(4)])
    assert [o.error for o in outcomes[:2]] == [None, None]  # they were updated: not reported as failed
    assert {o.error.code for o in outcomes[2:]} == {"INVALID_CREDENTIALS"}
