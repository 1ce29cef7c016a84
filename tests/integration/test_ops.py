"""Health and Prometheus metrics, through the app in front of the emulator over HTTP."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import API_KEY
from .conftest import EVENT_TOKEN


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def secured(make_stack):
    # limits on, so the emulator reports time.operating; each call costs 0.25 s of it
    stack = make_stack({"BITRIX_API_KEY": API_KEY, "BITRIX_AUTH_DISABLED": False}, limits=True, cost_per_call=0.25)
    stack.http.headers["Authorization"] = f"Bearer {API_KEY}"
    stack.configure()
    return stack


def test_health_is_public_and_says_what_it_checked(secured):
    r = secured.http.get(f"{secured.api}/health", headers={"Authorization": ""})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["database"]["ok"] is True
    assert body["redis"] == {"configured": False}
    assert body["limiter"]["backend"] == "local" and body["event_queue"]["backend"] == "inline"
    assert "127.0.0.1" not in r.text  # no portal, no tenant


def test_health_fails_when_the_configured_redis_is_down(make_app):
    app = make_app(BITRIX_REDIS_URL="redis://127.0.0.1:1/0")
    r = app.test_client().get("/api/bitrix/health")
    assert r.status_code == 503
    assert r.get_json()["status"] == "fail" and r.get_json()["redis"]["ok"] is False
    assert r.get_json()["redis"]["error"] == "ConnectionError"


def test_health_with_redis(make_app, redis_url):
    r = make_app(BITRIX_REDIS_URL=redis_url).test_client().get("/api/bitrix/health")
    assert r.status_code == 200 and r.get_json()["redis"]["ok"] is True
    assert r.get_json()["limiter"]["backend"] == "redis" and r.get_json()["event_queue"]["backend"] == "rq"


def test_metrics_are_protected(secured):
    assert secured.http.get(f"{secured.api}/metrics", headers={"Authorization": ""}).status_code == 401
    r = secured.http.get(f"{secured.api}/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")


def test_metrics_count_calls_errors_limits_retries_and_events(secured):
    api, http = secured.api, secured.http
    assert http.post(f"{api}/clients/1/contacts", json={"NAME": "Ann"}).status_code == 201
    assert http.get(f"{api}/clients/1/contacts/999999").status_code == 404
    secured.emulator.fail_rate, secured.emulator.fail_status = 1.0, 503  # every request: QUERY_LIMIT_EXCEEDED
    assert http.get(f"{api}/clients/1/contacts/1").status_code == 429
    secured.emulator.fail_rate = 0.0
    form = {"event": "ONCRMDEALUPDATE", "data[FIELDS][ID]": "5", "ts": "1790000000",
            "auth[domain]": secured.emulator_server.base.split("/")[2], "auth[application_token]": EVENT_TOKEN}
    assert http.post(f"{api}/clients/1/webhook", data=form).status_code == 200

    # The emulator posts its ONCRMCONTACTADD from a thread of its own: have it in before counting, so it cannot
    # come between the listing and the scrape below.
    assert secured.emulator.wait_events(30)
    stored = http.get(f"{api}/clients/1/events").json()  # ours, and the emulator's ONCRMCONTACTADD
    samples = _samples(http.get(f"{api}/metrics").text)
    assert _value(samples, "bitrix24_calls_total", tenant="1", method="crm.contact.add", outcome="ok") == 1
    assert _value(samples, "bitrix24_calls_total", tenant="1", method="crm.contact.get", outcome="error") == 2
    assert _value(samples, "bitrix24_errors_total", tenant="1", code="NOT_FOUND") == 1
    assert _value(samples, "bitrix24_errors_total", tenant="1", code="QUERY_LIMIT_EXCEEDED") == 1
    met = _value(samples, "bitrix24_limits_met_total", tenant="1", status="503")
    retries = _value(samples, "bitrix24_retries_total", tenant="1", error="QUERY_LIMIT_EXCEEDED")
    # Every 503 but the last was retried; when the last retry is refused by our own bucket before it is
    # sent (the portal's budget is spent for longer than the caller's bound), the last 503 was retried too.
    assert met >= 2 and met - 1 <= retries <= met
    assert _value(samples, "bitrix24_calls_total", tenant="1", method="profile", outcome="ok") == 1  # the save's check
    assert _value(samples, "bitrix24_call_seconds_count", tenant="1") == 4
    assert _value(samples, "bitrix24_operating_seconds", tenant="1", method="crm.contact.add") == 0.25
    events = {labels: v for (name, labels), v in samples.items() if name == "bitrix24_events"}
    assert stored["total"] >= 1 and sum(events.values()) == stored["total"]
    assert {dict(labels)["tenant"] for labels in events} == {"1"}


def test_event_lag_is_the_age_of_the_oldest_waiting_event(make_app):
    import datetime as dt

    from flask_bitrix24.extensions import db
    from flask_bitrix24.models.standalone import BitrixEvent

    app = make_app()
    now = dt.datetime.now(dt.UTC)
    with app.app_context():
        for i, (status, age) in enumerate([("retry", 120), ("received", 30), ("done", 900), ("failed", 600)]):
            db.session.add(BitrixEvent(client_id=7, event="ONCRMDEALUPDATE", payload={}, dedupe_key=f"k{i}",
                                       status=status, attempts=0, received_at=now - dt.timedelta(seconds=age)))
        db.session.commit()
    samples = _samples(app.test_client().get("/api/bitrix/metrics").get_data(as_text=True))
    assert 120 <= _value(samples, "bitrix24_event_lag_seconds", tenant="7") < 180  # done/failed do not count
    assert _value(samples, "bitrix24_events", tenant="7", status="failed") == 1


def test_metrics_need_a_key_even_with_an_authorize_hook(secret_key, tmp_path):
    """The hook decides per client; metrics span every tenant, so it cannot grant them."""
    from flask import Flask
    from flask_bitrix24 import Bitrix24

    host = Flask("host")
    host.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'm.db'}", BITRIX_SECRET_KEY=secret_key,
                       BITRIX_METRICS_TOKEN="scrape-token-123")
    Bitrix24(host, authorize=lambda client_id: True)  # lets everyone use the API
    from flask_bitrix24 import runtime

    with host.app_context():
        runtime(host).db.create_all()
    client = host.test_client()
    assert client.get("/api/bitrix/clients/1/config").status_code == 200
    assert client.get("/api/bitrix/metrics").status_code == 401
    ok = client.get("/api/bitrix/metrics", headers={"Authorization": "Bearer scrape-token-123"})
    assert ok.status_code == 200 and b"bitrix24_calls_total" in ok.data


def test_metrics_never_fail_a_call_and_label_the_global_webhook_env(make_stack, monkeypatch, tmp_path):
    stack = make_stack({"BITRIX_WEBHOOK_BASE": "", "BITRIX_API_KEY": API_KEY, "BITRIX_AUTH_DISABLED": False})
    stack.http.headers["Authorization"] = f"Bearer {API_KEY}"
    stack.app.config["BITRIX_WEBHOOK_BASE"] = stack.emulator_server.base  # every client falls back to it
    for client_id in (5, 6, 7):
        assert stack.http.post(f"{stack.api}/clients/{client_id}/contacts", json={"NAME": "x"}).status_code == 201
    samples = _samples(stack.http.get(f"{stack.api}/metrics").text)
    assert _value(samples, "bitrix24_calls_total", tenant="env", method="crm.contact.add", outcome="ok") == 3
    assert not any(dict(labels).get("tenant") in ("5", "6", "7") for _, labels in samples)

    metrics = stack.app.extensions["bitrix24"].metrics

    def broken(*args, **kwargs):
        raise FileNotFoundError("metrics folder gone")

    monkeypatch.setattr(metrics.calls, "labels", broken)
    assert stack.http.post(f"{stack.api}/clients/5/contacts", json={"NAME": "y"}).status_code == 201


def test_error_codes_from_the_portal_are_bounded_labels():
    from flask_bitrix24.services.metrics import MAX_CODES, Metrics

    metrics = Metrics()
    assert metrics.code_label("QUERY_LIMIT_EXCEEDED") == "QUERY_LIMIT_EXCEEDED"
    assert metrics.code_label("<script>") == "other" and metrics.code_label(None) == "UNKNOWN"
    labels = {metrics.code_label(f"CODE_{i}") for i in range(MAX_CODES * 2)}
    assert "other" in labels and len(labels) <= MAX_CODES + 1
