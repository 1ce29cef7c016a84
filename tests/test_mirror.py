"""The mirror's rules, fast: a write never goes backwards, deletions are flags, events feed it,
the status endpoint and the CLI say what to fix. End to end over HTTP: tests/integration/test_mirror_e2e.py."""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import parse_qs

import pytest
from flask_bitrix24.runtime import runtime
from flask_bitrix24.services import mirror
from sqlalchemy import select

from tests.conftest import PORTAL_BASE, portal_url
from tests.test_cli_transfer import CONTACT_FIELDS
from tests.test_webhook import event_form

T1, T2 = "2026-12-01T10:00:00+03:00", "2026-12-01T10:05:00+03:00"


@pytest.fixture
def mirrored(make_app):
    return make_app(BITRIX_SYNC_ENTITIES="contacts")


def row(record_id: int, modified: str, name: str) -> dict:
    return {"ID": str(record_id), "DATE_MODIFY": modified, "NAME": name}


def stored(app) -> dict[int, tuple[str, bool, dt.datetime | None]]:
    with app.app_context():
        model = runtime().mirror_models["contacts"]
        rows = runtime().session.execute(select(model.bitrix_id, model.data, model.deleted, model.date_modify)).all()
        return {int(i): (data["NAME"], deleted, mirror._utc(when)) for i, data, deleted, when in rows}


def test_a_stale_listing_never_overwrites_a_newer_row(mirrored):
    with mirrored.app_context():
        assert mirror.store_rows("contacts", 1, [row(5, T2, "new")]) == 1
        assert mirror.store_rows("contacts", 1, [row(5, T1, "old")]) == 0
        assert mirror.store_rows("contacts", 1, [row(5, T2, "new")]) == 0  # nothing new: not counted
        # Two edits in one second share a DATE_MODIFY: the later listing's data wins.
        assert mirror.store_rows("contacts", 1, [row(5, T2, "newer, same second")]) == 1
    assert stored(mirrored) == {5: ("newer, same second", False, dt.datetime(2026, 12, 1, 7, 5, tzinfo=dt.UTC))}


def test_tenants_are_apart(mirrored):
    with mirrored.app_context():
        mirror.store_rows("contacts", 1, [row(5, T1, "one's")])
        mirror.store_rows("contacts", 2, [row(5, T2, "two's")])
        mirror.mark_deleted("contacts", 2, [5])
        model = runtime().mirror_models["contacts"]
        got = runtime().session.execute(select(model.client_id, model.deleted).order_by(model.client_id)).all()
    assert [tuple(r) for r in got] == [(1, False), (2, True)]


def test_a_deleted_row_comes_back_only_when_the_portal_shows_it(mirrored):
    with mirrored.app_context():
        mirror.store_rows("contacts", 1, [row(5, T1, "a")])
        assert mirror.mark_deleted("contacts", 1, [5]) == 1
        assert mirror.store_rows("contacts", 1, [row(5, T1, "a")]) == 0  # a listing read before the delete
        assert stored(mirrored)[5][1] is True
        assert mirror.store_rows("contacts", 1, [row(5, T1, "a")], force=True) == 1  # the ID comparison saw it
        assert stored(mirrored)[5][1] is False
        mirror.mark_deleted("contacts", 1, [5])
        assert mirror.store_rows("contacts", 1, [row(5, T2, "restored")]) == 1  # modified after: restored
    assert stored(mirrored)[5] == ("restored", False, dt.datetime(2026, 12, 1, 7, 5, tzinfo=dt.UTC))


def test_an_id_comparison_spares_rows_stored_after_it_listed(mirrored):
    with mirrored.app_context():
        mirror.store_rows("contacts", 1, [row(5, T1, "old"), row(6, T1, "old")])
        listed_at = mirror.utcnow()
        mirror.store_rows("contacts", 1, [row(7, T2, "an event stored it meanwhile")])
        assert mirror.mark_deleted("contacts", 1, [5, 7], seen_before=listed_at) == 1
    assert {i: d for i, (_, d, _) in stored(mirrored).items()} == {5: True, 6: False, 7: False}


def test_events_feed_the_mirror_of_a_tenant_who_turned_it_on(mirrored, portal):
    client = mirrored.test_client()
    assert client.post("/api/bitrix/clients/1/config", json={
        "webhook_base": PORTAL_BASE,
        "outbound_token": "tok-c1-abcdef"}).status_code == 201
    portal.post(portal_url("crm.contact.fields"), json={"result": CONTACT_FIELDS})
    portal.post(portal_url("crm.contact.list"), json={"result": [row(89, T2, "Ada")], "total": 1})

    r = client.post("/api/bitrix/webhook", data=event_form(event="ONCRMCONTACTUPDATE"))
    r.close()
    assert stored(mirrored) == {}  # the mirror is off for this tenant: nothing read, nothing stored
    assert not [c for c in portal.calls if "crm.contact" in c.request.url]

    with mirrored.app_context():
        mirror.enable(1, "contacts")
    r = client.post("/api/bitrix/webhook", data=event_form(event="ONCRMCONTACTUPDATE", ts="1724696256"))
    r.close()
    assert stored(mirrored) == {89: ("Ada", False, dt.datetime(2026, 12, 1, 7, 5, tzinfo=dt.UTC))}
    body = [c for c in portal.calls if "crm.contact.list" in c.request.url][-1].request.body
    sent = parse_qs(body.decode() if isinstance(body, bytes) else body)
    assert sent["filter[@ID][]"] == ["89"] and {"*", "UF_*", "PHONE", "EMAIL"} <= set(sent["select[]"])

    r = client.post("/api/bitrix/webhook", data=event_form(event="ONCRMCONTACTDELETE", ts="1724696257"))
    r.close()
    assert stored(mirrored)[89][1] is True
    with mirrored.app_context():  # and the events were done, not retrying
        events = runtime().event_model
        assert {s for (s,) in runtime().session.execute(select(events.status))} == {"done"}


def test_status_endpoint(mirrored, make_app):
    client = mirrored.test_client()
    with mirrored.app_context():
        mirror.store_rows("contacts", 3, [row(5, T1, "a"), row(6, T1, "b")])
        mirror.mark_deleted("contacts", 3, [6])
        mirror.enable(3, "contacts")
    body = client.get("/api/bitrix/clients/3/sync").get_json()
    (view,) = body["mirror"]
    assert (view["entity"], view["enabled"], view["rows"], view["deleted_rows"]) == ("contacts", True, 1, 1)
    assert view["lag_seconds"] is None and view["phase"] is None and not view["running"]
    assert "hint" not in body

    plain = make_app().test_client().get("/api/bitrix/clients/3/sync").get_json()
    assert plain["mirror"] == [] and "BITRIX_SYNC_ENTITIES" in plain["hint"]


def test_an_unknown_entity_in_the_setting_fails_at_start(make_app):
    with pytest.raises(ValueError, match="cannot mirror tasks"):
        make_app(BITRIX_SYNC_ENTITIES="contacts,tasks")


def test_sync_command_usage(mirrored):
    runner = mirrored.test_cli_runner()
    result = runner.invoke(args=["bitrix24", "sync", "contacts", "--client", "1", "--status"])
    assert result.exit_code == 0 and json.loads(result.output)["mirror"][0]["enabled"] is False
    result = runner.invoke(args=["bitrix24", "sync", "leads", "--client", "1"])
    assert result.exit_code == 2 and "add it to BITRIX_SYNC_ENTITIES" in result.output
    result = runner.invoke(args=["bitrix24", "sync", "contacts", "--client", "1", "--off"])
    assert result.exit_code == 0 and "mirror off" in result.output


def test_a_delete_event_for_a_row_not_stored_yet_leaves_a_tombstone(mirrored):
    """A listing read before the deletion (the copy's batch in memory, a slow walk) cannot bring it back."""
    with mirrored.app_context():
        mirror.enable(1, "contacts")
        assert mirror.mark_deleted("contacts", 1, [77], tombstones=True) == 1
        assert mirror.store_rows("contacts", 1, [row(77, T2, "read before the deletion")]) == 0
        assert mirror.store_rows("contacts", 1, [row(77, T2, "the ID comparison saw it")], force=True) == 1
    assert stored(mirrored)[77][:2] == ("the ID comparison saw it", False)


def test_an_undated_row_never_replaces_a_dated_one(mirrored):
    with mirrored.app_context():
        mirror.store_rows("contacts", 1, [row(5, T2, "dated")])
        assert mirror.store_rows("contacts", 1, [{"ID": "5", "NAME": "undated"}]) == 0
    assert stored(mirrored)[5][0] == "dated"


def test_the_mirrors_failure_never_reruns_or_fails_the_hosts_handler(mirrored, portal, caplog):
    from flask_bitrix24.extensions import bitrix24

    saved = {k: list(v) for k, v in bitrix24.hooks._handlers.items()}
    ran = []
    bitrix24.hooks.add_handler("ONCRMCONTACTUPDATE", lambda event: ran.append(event.entity_id))
    try:
        client = mirrored.test_client()
        client.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE, "outbound_token": "tok-c1-abcdef"})
        with mirrored.app_context():
            mirror.enable(1, "contacts")
        portal.post(portal_url("crm.contact.fields"), json={"error": "ACCESS_DENIED",
                                                            "error_description": "no CRM rights"}, status=403)
        client.post("/api/bitrix/webhook", data=event_form(event="ONCRMCONTACTUPDATE")).close()
        assert ran == ["89"] and stored(mirrored) == {}
        with mirrored.app_context():
            events = runtime().event_model
            assert [(s, a) for s, a in runtime().session.execute(select(events.status, events.attempts))] == \
                [("done", 1)]
        assert "the mirror could not follow it" in caplog.text
    finally:
        bitrix24.hooks._handlers.clear()
        bitrix24.hooks._handlers.update(saved)


def test_the_cursor_never_passes_the_moment_the_walk_began(mirrored, portal):
    """The walk goes by ID: a record it passed early may change before it ends. A row dated after the
    walk began (a later change, or the portal's clock ahead of ours) must not carry the cursor past it."""
    client = mirrored.test_client()
    client.post("/api/bitrix/clients/1/config", json={"webhook_base": PORTAL_BASE, "outbound_token": "tok-c1-abcdef"})
    portal.post(portal_url("crm.contact.fields"), json={"result": CONTACT_FIELDS})
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).isoformat(timespec="seconds")
    portal.post(portal_url("crm.contact.list"), json={"result": [row(3, later, "x")], "total": 1})
    with mirrored.app_context():
        state_model = runtime().sync_state_model
        session = runtime().session
        session.add(state_model(client_id=1, entity="mirror:contacts", runs=0, unannounced=0, mirror=True,
                                phase="incremental", cursor=T1))
        session.commit()
        before = mirror.utcnow()
        report = mirror.sync(1, "contacts", check_ids=False)
        assert report.changed == 1
        cursor = mirror._utc(report.cursor)
        assert before - dt.timedelta(seconds=1) <= cursor <= mirror.utcnow()


def test_sync_of_a_client_without_a_portal_turns_nothing_on(mirrored):
    result = mirrored.test_cli_runner().invoke(args=["bitrix24", "sync", "contacts", "--client", "9"])
    assert result.exit_code == 1 and "CONFIG_MISSING" in result.output, result.output
    with mirrored.app_context():
        assert mirror.status(9)[0]["enabled"] is False and mirror.pairs() == []
    result = mirrored.test_cli_runner().invoke(args=["bitrix24", "sync", "contacts", "--client", "99999999999"])
    assert result.exit_code == 2 and "--client" in result.output


def test_an_event_verified_with_the_environments_token_feeds_the_clients_on_that_portal(make_app, portal):
    """BITRIX_WEBHOOK_BASE serves every client without a config of its own (the demo, a single-portal app): its
    events carry no tenant, and reach the mirrors of the clients on the portal they came from, by domain."""
    app = make_app(BITRIX_SYNC_ENTITIES="contacts", BITRIX_WEBHOOK_BASE=PORTAL_BASE, BITRIX_OUTBOUND_TOKEN="tok-env-123456")
    portal.post(portal_url("crm.contact.fields"), json={"result": CONTACT_FIELDS})
    portal.post(portal_url("crm.contact.list"), json={"result": [row(89, T2, "Ada")], "total": 1})
    with app.app_context():
        mirror.enable(1, "contacts")
    client = app.test_client()
    client.post("/api/bitrix/webhook", data=event_form(event="ONCRMCONTACTUPDATE", token="tok-env-123456")).close()
    assert stored(app) == {89: ("Ada", False, dt.datetime(2026, 12, 1, 7, 5, tzinfo=dt.UTC))}
    portal.post(portal_url("crm.contact.list"), json={"result": [row(90, T2, "Other")], "total": 1})
    client.post("/api/bitrix/webhook", data=event_form(event="ONCRMCONTACTUPDATE", token="tok-env-123456",
                                                       domain="another.bitrix24.com", entity_id="90")).close()
    assert set(stored(app)) == {89}  # another portal's event: nobody's here
