"""The offline event queue (bitrix24_emulator/offline.py), ONOFFLINEEVENT, auth_connector, and the
emulator's own endpoints for synchronisation tests: /_emulator/changes and /_emulator/events.

Sources: https://apidocs.bitrix24.com/api-reference/events/offline-events.html (one queue per source key,
the latest state of an object, reservation, the application's own changes not queued on its connector,
Professional and up), https://apidocs.bitrix24.com/api-reference/events/event-offline-get.html (filter,
order, limit, clear, process_id, error, the result), https://apidocs.bitrix24.com/api-reference/events/event-offline-clear.html,
https://apidocs.bitrix24.com/api-reference/events/event-offline-error.html,
https://apidocs.bitrix24.com/api-reference/events/event-offline-list.html (PROCESS_ID, ERROR, pages of 50),
https://apidocs.bitrix24.com/api-reference/events/on-offline-event.html (minTimeout, empty data, the refresh
token), https://apidocs.bitrix24.com/api-reference/events/event-bind.html (offline binding is for
administrators), https://apidocs.bitrix24.com/api-reference/common/system/feature-get.html
(rest_offline_extended, rest_auth_connector); where the pages are silent, the portal's source
(modules/rest/lib/api/event.php, modules/rest/lib/eventoffline.php, modules/rest/lib/event/provideroffline.php).
"""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
import requests
from werkzeug.test import Client

from bitrix24_emulator import create_emulator, create_portals, eventsapi, start_server
from bitrix24_emulator.__main__ import build_parser, emulator_options
from bitrix24_emulator.errors import ApiError

from .conftest import BASE, FakeClock
from .test_oauth import APP, HOST, AppServer, Portal, installed

WRONG_AUTH_TYPE = {"error": "WRONG_AUTH_TYPE", "error_description": "Current authorization type is denied for this method"}
NO_PROCESS = {"error": "ERROR_ARGUMENT", "error_description": "Argument 'PROCESS_ID' is null or empty",
              "argument": "PROCESS_ID"}


class Sync:
    """A portal with the application installed (no UI), called with its token, in-process."""

    def __init__(self, app_server, **options):
        self.portal, install = installed(app_server, **options)
        self.emu = self.portal.emu
        self.clock = self.portal.clock
        self.token = install["auth[access_token]"]
        self.app_server = app_server

    def call(self, method, payload=None):
        return self.portal.rest(method, self.token, payload)

    def ok(self, method, payload=None):
        return self.portal.ok(method, self.token, payload)

    def bind_offline(self, *events, connector=None):
        for name in events:
            payload = {"event": name, "event_type": "offline"}
            if connector is not None:
                payload["auth_connector"] = connector
            assert self.ok("event.bind", payload) is True

    def webhook(self, method, payload=None):
        response = self.portal.client.post(BASE + method, json=payload)
        return response.status_code, response.json

    def changes(self, **payload):
        return self.portal.post_json("/_emulator/changes", payload)

    def changed(self, **payload):
        status, body = self.changes(**payload)
        assert status == 200, body
        return body

    def events(self, payload=None):
        if payload is None:
            response = self.portal.client.get("/_emulator/events", headers={"Host": HOST})
            return response.status_code, response.json
        return self.portal.post_json("/_emulator/events", payload)

    def rows(self, connector=None, **payload):
        """Every row of a queue (event.offline.list, page by page)."""
        if connector is not None:
            payload["auth_connector"] = connector
        rows, start = [], 0
        while True:
            status, body = self.call("event.offline.list", {**payload, "start": start})
            assert status == 200, body
            rows += body["result"]
            if "next" not in body:
                return rows
            start = body["next"]

    def get(self, **payload):
        return self.ok("event.offline.get", payload)


@pytest.fixture
def app_server():
    server = AppServer()
    yield server
    server.close()


@pytest.fixture
def sync(app_server):
    return Sync(app_server)


def ids(rows) -> list[str]:
    return [r["EVENT_DATA"]["FIELDS"]["ID"] for r in rows]


# ---- binding, rows, the latest state ------------------------------------------------------------------


def test_an_offline_row_has_the_documented_shape(sync):
    sync.bind_offline("ONCRMCONTACTADD")
    assert sync.ok("event.get") == [{"event": "ONCRMCONTACTADD", "connector_id": "", "offline": 1}]
    assert sync.changed(entity="contact", add=1)["added"] == [1]
    [row] = sync.rows()
    assert list(row) == ["ID", "TIMESTAMP_X", "EVENT_NAME", "EVENT_DATA", "EVENT_ADDITIONAL", "MESSAGE_ID",
                         "PROCESS_ID", "ERROR"]
    assert row["ID"] == "1" and row["TIMESTAMP_X"] == "2026-11-27T11:00:00+03:00"
    assert row["EVENT_NAME"] == "ONCRMCONTACTADD" and row["EVENT_DATA"] == {"FIELDS": {"ID": "1"}}
    assert row["EVENT_ADDITIONAL"] == {"user_id": "1"} and (row["PROCESS_ID"], row["ERROR"]) == ("", "0")
    assert row["MESSAGE_ID"] == hashlib.md5(b'ONCRMCONTACTADD|{"FIELDS":{"ID":"1"}}').hexdigest()
    got = sync.get()
    assert got == {"process_id": None, "events": [{k: row[k] for k in list(row)[:6]}]}
    assert sync.rows() == [] and sync.get() == {"process_id": None, "events": []}


def test_ten_updates_of_one_contact_are_one_row_with_the_last_time(sync):
    sync.bind_offline("ONCRMCONTACTUPDATE", "ONCRMCONTACTDELETE")
    sync.changed(entity="contact", add=2)
    assert sync.rows() == []  # ONCRMCONTACTADD is not bound offline
    for _ in range(10):
        sync.clock.advance(60)
        sync.changed(entity="contact", update=[1])
    sync.changed(entity="contact", update=[2, 1])
    rows = sync.rows()
    assert [(r["ID"], r["EVENT_NAME"], r["EVENT_DATA"]) for r in rows] == [
        ("1", "ONCRMCONTACTUPDATE", {"FIELDS": {"ID": "1"}}), ("2", "ONCRMCONTACTUPDATE", {"FIELDS": {"ID": "2"}})]
    assert rows[0]["TIMESTAMP_X"] == "2026-11-27T11:10:00+03:00"  # refreshed, ID kept
    # The default order is TIMESTAMP_X: contact 2 was written before contact 1's last update.
    assert ids(sync.get(clear=0)["events"]) == ["2", "1"]
    sync.changed(entity="contact", delete=[2])
    assert [r["EVENT_NAME"] for r in sync.rows(filter={"PROCESS_ID": ""})] == ["ONCRMCONTACTDELETE"]


# ---- batches: reserve, re-read, clear, errors ---------------------------------------------------------


def test_clear_0_reserves_a_batch_hidden_from_the_next_caller(sync):
    sync.bind_offline("ONCRMCONTACTADD")
    sync.changed(entity="contact", add=7)
    first = sync.get(clear=0, limit=3)
    second = sync.get(clear=0, limit=3)
    assert len(first["process_id"]) == 32 and first["process_id"].isalnum()
    assert first["process_id"] != second["process_id"]
    assert ids(first["events"]) == ["1", "2", "3"] and ids(second["events"]) == ["4", "5", "6"]
    listed = {r["ID"]: r["PROCESS_ID"] for r in sync.rows()}
    assert listed == {"1": first["process_id"], "2": first["process_id"], "3": first["process_id"],
                      "4": second["process_id"], "5": second["process_id"], "6": second["process_id"], "7": ""}
    # With its process_id a caller reads its batch again (nothing new is reserved), limit and filter apply.
    again = sync.get(clear=0, process_id=first["process_id"], limit=2)
    assert again["process_id"] == first["process_id"] and ids(again["events"]) == ["1", "2"]
    assert ids(sync.get(clear=0, process_id=first["process_id"], filter={">ID": 1})["events"]) == ["2", "3"]
    # clear=1 with a process_id deletes the whole batch, rows past the limit too.
    assert ids(sync.get(process_id=first["process_id"], limit=1)["events"]) == ["1"]
    assert sorted(r["ID"] for r in sync.rows()) == ["4", "5", "6", "7"]
    # The default get (clear=1) takes only unreserved rows.
    [last] = sync.rows(filter={"PROCESS_ID": ""})
    assert sync.get() == {"process_id": None,
                          "events": [{k: v for k, v in last.items() if k not in ("PROCESS_ID", "ERROR")}]}


def test_parallel_callers_get_disjoint_batches_over_http(app_server):
    server = start_server(create_emulator(app=APP, limits=False))
    try:
        url = server.url
        assert requests.post(f"{url}/_emulator/install", json={"handler": app_server.url + "/cb", "ui": False},
                             timeout=10).json()["installed"] is True
        token = app_server.posts("/cb")[-1]["auth[access_token]"]
        assert requests.post(f"{url}/rest/event.bind", json={"auth": token, "event": "ONCRMCONTACTADD",
                                                             "event_type": "offline"}, timeout=5).json()["result"]
        assert len(requests.post(f"{url}/_emulator/changes", json={"entity": "contact", "add": 200},
                                 timeout=30).json()["added"]) == 200
        batches, lock = [], threading.Lock()

        def worker():
            while True:
                body = requests.post(f"{url}/rest/event.offline.get",
                                     json={"auth": token, "clear": 0, "limit": 7}, timeout=10).json()["result"]
                if not body["events"]:
                    return
                with lock:
                    batches.append(body)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        seen = [e["ID"] for b in batches for e in b["events"]]
        assert len(seen) == 200 and len(set(seen)) == 200  # every row once: no two callers share one
        assert len({b["process_id"] for b in batches}) == len(batches)
        for batch in batches:
            ok = requests.post(f"{url}/rest/event.offline.clear", json={"auth": token, "process_id": batch["process_id"]},
                               timeout=5).json()
            assert ok["result"] is True
        assert requests.get(f"{url}/_emulator/stats", timeout=5).json()["offline_queued"] == 0
    finally:
        server.stop()


def test_a_change_while_reserved_makes_a_new_row_so_nothing_is_lost(sync):
    sync.bind_offline("ONCRMCONTACTUPDATE")
    sync.changed(entity="contact", add=1, update=[])
    sync.changed(entity="contact", update=[1])
    batch = sync.get(clear=0)
    [reserved] = batch["events"]
    sync.clock.advance(5)
    sync.changed(entity="contact", update=[1])  # while the batch is being processed
    rows = sync.rows()
    assert [(r["ID"], r["PROCESS_ID"]) for r in rows] == [("1", batch["process_id"]), ("2", "")]
    assert rows[0]["MESSAGE_ID"] == rows[1]["MESSAGE_ID"] == reserved["MESSAGE_ID"]
    assert rows[1]["TIMESTAMP_X"] == "2026-11-27T11:00:05+03:00"
    assert sync.ok("event.offline.clear", {"process_id": batch["process_id"]}) is True
    assert [r["ID"] for r in sync.rows()] == ["2"]  # the later change is still there


def test_clear_by_process_by_id_and_by_message_id(sync):
    sync.bind_offline("ONCRMCONTACTADD")
    sync.changed(entity="contact", add=6)
    batch = sync.get(clear=0, limit=5)
    pid, events = batch["process_id"], batch["events"]
    assert sync.ok("event.offline.clear", {"process_id": pid, "id": [int(events[0]["ID"])]}) is True
    assert sync.ok("event.offline.clear", {"process_id": pid, "message_id": [events[1]["MESSAGE_ID"]]}) is True
    assert [r["ID"] for r in sync.rows()] == ["3", "4", "5", "6"]
    # Given both, the portal reads message_id (its docs say id wins): event 3's message, not event 4's id.
    assert sync.ok("event.offline.clear", {"process_id": pid, "id": [4],
                                           "message_id": [events[2]["MESSAGE_ID"]]}) is True
    assert [r["ID"] for r in sync.rows()] == ["4", "5", "6"]
    # Another process's id clears nothing of this one; an unreserved row is no batch's.
    assert sync.ok("event.offline.clear", {"process_id": "x" * 32}) is True
    assert sync.ok("event.offline.clear", {"process_id": pid, "id": [6]}) is True
    assert [r["ID"] for r in sync.rows()] == ["4", "5", "6"]
    assert sync.ok("event.offline.clear", {"process_id": pid}) is True  # the rest of the batch
    assert [r["ID"] for r in sync.rows()] == ["6"]


def test_clear_refusals(sync):
    assert sync.call("event.offline.clear") == (400, NO_PROCESS)
    assert sync.call("event.offline.clear", {"process_id": None}) == (400, NO_PROCESS)
    assert sync.call("event.offline.clear", {"process_id": "p", "id": "5"}) == (400, {
        "error": "ERROR_ARGUMENT", "error_description": "Value must be array of integers", "argument": "id"})
    assert sync.call("event.offline.clear", {"process_id": "p", "id": [1, 0]})[1]["argument"] == "id"
    assert sync.call("event.offline.clear", {"process_id": "p", "message_id": "abc"}) == (400, {
        "error": "ERROR_ARGUMENT", "error_description": "Value must be array of MESSAGE_ID values",
        "argument": "message_id"})
    # A MESSAGE_ID is 32 characters; the portal names the argument with three s's here.
    assert sync.call("event.offline.clear", {"process_id": "p", "message_id": ["short"]})[1]["argument"] == "messsage_id"


def test_reserved_rows_expire_and_an_empty_process_id_names_the_unreserved_rows(app_server):
    sync = Sync(app_server, access_ttl=10**8)  # a token outliving the month
    sync.bind_offline("ONCRMCONTACTADD")
    sync.changed(entity="contact", add=3)
    pid = sync.get(clear=0, limit=1)["process_id"]
    # process_id "" is not "no process" (the portal checks for null only): the unreserved rows, read
    # without reserving them...
    again = sync.get(clear=0, process_id="")
    assert again["process_id"] == "" and ids(again["events"]) == ["2", "3"]
    assert sync.ok("event.offline.clear", {"process_id": "", "id": [2]}) is True
    assert [r["ID"] for r in sync.rows()] == ["1", "3"]
    # A reserved batch is forgotten after PROCESS_ID_LIFETIME (the docs: "up to 30 days").
    sync.clock.advance(2_952_000)
    assert [r["ID"] for r in sync.rows()] == ["1", "3"]
    sync.clock.advance(1)
    assert [r["ID"] for r in sync.rows()] == ["3"]
    assert sync.get(process_id=pid)["events"] == []


def test_error_marks_rows_out_of_the_batch_and_error_1_reads_them(sync):
    sync.bind_offline("ONCRMCONTACTUPDATE")
    sync.changed(entity="contact", add=3)
    sync.changed(entity="contact", update=[1, 2, 3])
    batch = sync.get(clear=0)
    pid = batch["process_id"]
    failed = batch["events"][0]
    assert sync.ok("event.offline.error", {"process_id": pid, "message_id": [failed["MESSAGE_ID"]]}) is True
    rows = {r["ID"]: (r["PROCESS_ID"], r["ERROR"]) for r in sync.rows()}
    assert rows == {"1": ("", "1"), "2": (pid, "0"), "3": (pid, "0")}
    assert sync.ok("event.offline.clear", {"process_id": pid}) is True  # the marked row is not the batch's now
    assert sync.get() == {"process_id": None, "events": []}  # not in a normal get
    assert [r["ERROR"] for r in sync.rows(filter={"ERROR": 1})] == ["1"]
    # A change to the object refreshes its marked row (the upsert key has no ERROR): still an error.
    sync.clock.advance(3)
    sync.changed(entity="contact", update=[1])
    [marked] = sync.rows()
    assert (marked["ID"], marked["ERROR"], marked["TIMESTAMP_X"]) == ("1", "1", "2026-11-27T11:00:03+03:00")
    errors = sync.get(error=1, clear=0)
    assert ids(errors["events"]) == ["1"] and errors["process_id"]
    assert sync.rows()[0]["PROCESS_ID"] == errors["process_id"]
    assert ids(sync.get(error=1, process_id=errors["process_id"])["events"]) == ["1"]  # clear=1: gone
    assert sync.rows() == []


def test_error_drops_the_objects_rows_outside_the_batch(sync):
    sync.bind_offline("ONCRMCONTACTUPDATE")
    sync.changed(entity="contact", add=1, update=[])
    sync.changed(entity="contact", update=[1])
    batch = sync.get(clear=0)
    sync.changed(entity="contact", update=[1])  # a new unreserved row of the same object
    assert len(sync.rows()) == 2
    mid = batch["events"][0]["MESSAGE_ID"]
    assert sync.ok("event.offline.error", {"process_id": batch["process_id"], "message_id": [mid]}) is True
    assert [(r["ID"], r["PROCESS_ID"], r["ERROR"]) for r in sync.rows()] == [("1", "", "1")]


def test_error_refusals(sync):
    assert sync.call("event.offline.error", {"message_id": ["x"]}) == (400, NO_PROCESS)
    assert sync.call("event.offline.error", {"process_id": "p"}) == (400, {
        "error": "ERROR_ARGUMENT", "error_description": "Value must be array of MESSAGE_ID values",
        "argument": "message_id"})
    assert sync.ok("event.offline.error", {"process_id": "p", "message_id": []}) is True


def test_list_pages_by_50_and_reads_every_row(sync):
    sync.bind_offline("ONCRMCONTACTADD")
    sync.changed(entity="contact", add=120)
    status, body = sync.call("event.offline.list")
    assert status == 200 and len(body["result"]) == 50 and body["total"] == 120 and body["next"] == 50
    assert [r["ID"] for r in body["result"]][:2] == ["1", "2"]
    body = sync.call("event.offline.list", {"start": 100})[1]
    assert len(body["result"]) == 20 and body["total"] == 120 and "next" not in body
    body = sync.call("event.offline.list", {"order": {"ID": "desc"}, "filter": {"<=ID": 60}})[1]
    assert [r["ID"] for r in body["result"]][:2] == ["60", "59"] and body["total"] == 60
    pid = sync.get(clear=0, limit=10)["process_id"]
    body = sync.call("event.offline.list", {"filter": {"PROCESS_ID": pid}})[1]
    assert body["total"] == 10 and {r["PROCESS_ID"] for r in body["result"]} == {pid}
    assert sync.call("event.offline.list", {"filter": {"=ERROR": 1}})[1]["total"] == 0
    assert sync.call("event.offline.list", {"filter": {"@ID": [1, 2, 200]}})[1]["total"] == 2
    assert len(sync.rows()) == 120  # list changes nothing


def test_filter_and_order_of_get(sync):
    sync.bind_offline("ONCRMCONTACTADD", "ONCRMDEALADD")
    sync.changed(entity="contact", add=2)
    sync.clock.advance(60)
    sync.changed(entity="deal", add=2)
    deals = sync.get(clear=0, filter={"=EVENT_NAME": "onCrmDealAdd"})  # names compare case-insensitively
    assert [e["EVENT_NAME"] for e in deals["events"]] == ["ONCRMDEALADD", "ONCRMDEALADD"]
    later = sync.get(clear=0, filter={">=TIMESTAMP_X": "2026-11-27T11:00:30+03:00"})
    assert later["events"] == []  # the deals are reserved now
    assert ids(sync.get(clear=0, order={"ID": "DESC"}, filter={"<TIMESTAMP_X": "2026-11-27T08:00:30Z"})[
        "events"]) == ["2", "1"]
    assert sync.rows(filter={"PROCESS_ID": ""}) == []
    assert [r["ID"] for r in sync.rows(order=["EVENT_NAME", "ID"])] == ["1", "2", "3", "4"]


@pytest.mark.parametrize(("payload", "description"), [
    ({"filter": "x"}, "The filter is not an array."),
    ({"filter": {"!ID": 1}}, "Filter operation not allowed: !"),
    ({"filter": {"!=ID": 1}}, "Filter operation not allowed: !="),
    ({"filter": {"PROCESS_ID": "x"}}, "Filter field not allowed: PROCESS_ID"),  # get's fields are four
    ({"filter": {"=ID": [1, 2]}}, "The value of an argument '=ID' has an invalid type"),
    ({"filter": {">ID": {"a": 1}}}, "The value of an argument '>ID' has an invalid type"),
    ({"order": "ID"}, "The order is not an array."),
    ({"order": {"NAME": "ASC"}}, "Order field not allowed: NAME"),
    ({"order": {"ID": "UP"}}, "Order direction should be one of {ASC|DESC}"),
    ({"order": ["NAME"]}, "Order field not allowed: NAME"),
    ({"limit": 0}, "Value must be positive integer"),
    ({"limit": -5}, "Value must be positive integer"),
    ({"limit": "abc"}, "Value must be positive integer"),
])
def test_get_refusals(sync, payload, description):
    sync.bind_offline("ONCRMCONTACTADD")
    sync.changed(entity="contact", add=1)
    status, body = sync.call("event.offline.get", payload)
    assert (status, body["error"], body["error_description"]) == (400, "ERROR_ARGUMENT", description)
    assert len(sync.rows()) == 1  # nothing was taken


# ---- who may, and the plan --------------------------------------------------------------------------------


def test_webhooks_and_non_administrators_are_refused(sync):
    for method in ("event.offline.get", "event.offline.clear", "event.offline.error", "event.offline.list"):
        assert sync.webhook(method, {"process_id": "p"}) == (403, WRONG_AUTH_TYPE)
        with pytest.raises(ApiError) as caught:
            eventsapi.call(method, {}, sync.emu, {"auth_type": "oauth", "app_id": 1, "admin": False, "user_id": 2})
        assert (caught.value.status, caught.value.body()) == (403, {"error": "ACCESS_DENIED",
                                                                    "error_description": "Access denied!"})
    with pytest.raises(ApiError) as caught:
        eventsapi.call("event.bind", {"event": "ONCRMCONTACTADD", "event_type": "offline"}, sync.emu,
                       {"auth_type": "oauth", "app_id": 1, "admin": False, "user_id": 2})
    assert caught.value.body()["error_description"] == (
        "Access denied! Offline events binding requires administrator access rights")


def test_clear_0_needs_the_extended_mode_of_the_plan(app_server):
    sync = Sync(app_server, offline_extended=False)
    sync.bind_offline("ONCRMCONTACTADD")
    sync.changed(entity="contact", add=2)
    assert sync.call("event.offline.get", {"clear": 0}) == (403, {
        "error": "WRONG_LICENSE",
        "error_description": "This feature is not enabled for the current license: extended offline events handling"})
    assert sync.call("event.offline.get", {"clear": "no"})[0] == 403  # intval("no") is 0
    assert ids(sync.get(limit=1)["events"]) == ["1"]  # clear=1 works on any plan
    assert sync.ok("feature.get", {"CODE": "rest_offline_extended"}) == {"value": "N"}
    assert sync.ok("feature.get", {"CODE": "rest_auth_connector"}) == {"value": "Y"}


def test_auth_connector_needs_its_feature_and_a_webhooks_has_no_effect(app_server):
    sync = Sync(app_server, auth_connectors=False)
    assert sync.call("profile", {"auth_connector": "sync"}) == (403, {
        "error": "WRONG_LICENSE", "error_description": "This feature is not enabled for the current license: auth_connector"})
    assert sync.call("profile", {"auth_connector": ""})[0] == 403  # given at all
    assert sync.ok("profile")["ID"] == "1"
    assert sync.webhook("profile", {"auth_connector": "sync"})[0] == 200
    assert sync.ok("feature.get", {"code": "rest_auth_connector"}) == {"value": "N"}
    assert sync.webhook("feature.get", {})[1] == {"error": "CODE_EMPTY", "error_description": "CODE can't be empty"}
    assert sync.webhook("feature.get", {"CODE": "no_such_feature"})[1]["result"] == {"value": "N"}


def test_the_cli_switches_the_plan_and_the_drop_rate():
    options = emulator_options(build_parser().parse_args(["--no-offline-extended", "--no-auth-connector",
                                                          "--event-drop-rate", "0.25"]))
    emu = create_emulator(**options)
    assert emu.features == {"rest_offline_extended": False, "rest_auth_connector": False}
    assert emu.event_drop_rate == 0.25
    assert create_emulator().features == {"rest_offline_extended": True, "rest_auth_connector": True}
    with pytest.raises(SystemExit):
        emulator_options(build_parser().parse_args(["--event-drop-rate", "2"]))


# ---- the skip rule --------------------------------------------------------------------------------------


def test_an_apps_own_changes_skip_the_queue_of_their_connector_only(sync):
    sync.bind_offline("ONCRMCONTACTADD")  # the connector-less queue
    sync.bind_offline("ONCRMCONTACTADD", connector="sync")
    assert sync.ok("event.get") == [{"event": "ONCRMCONTACTADD", "connector_id": "", "offline": 1},
                                    {"event": "ONCRMCONTACTADD", "connector_id": "sync", "offline": 1}]
    sync.ok("crm.contact.add", {"fields": {"NAME": "own, no connector"}})  # 1: skips "" only
    sync.ok("crm.contact.add", {"fields": {"NAME": "own, sync"}, "auth_connector": "sync"})  # 2: skips "sync"
    sync.ok("crm.contact.add", {"fields": {"NAME": "own, other"}, "auth_connector": "other"})  # 3: both
    assert sync.webhook("crm.contact.add", {"fields": {"NAME": "webhook"}, "auth_connector": "sync"})[0] == 200  # 4
    sync.changed(entity="contact", add=1)  # 5, a person in the portal
    assert ids(sync.rows()) == ["2", "3", "4", "5"]
    assert ids(sync.rows(connector="sync")) == ["1", "3", "4", "5"]
    # get and clear take the connector from the call too.
    assert ids(sync.get(auth_connector="sync", limit=1)["events"]) == ["1"]
    assert ids(sync.rows(connector="sync")) == ["3", "4", "5"] and len(sync.rows()) == 4
    assert sync.rows(connector="nobody") == []


def test_auth_connector_never_reaches_the_method(sync, monkeypatch):
    seen = []
    original = sync.emu.store.add
    monkeypatch.setattr(sync.emu.store, "add", lambda entity, params: seen.append(dict(params)) or original(entity, params))
    sync.ok("crm.contact.add", {"fields": {"NAME": "A"}, "auth_connector": "sync"})
    assert "auth_connector" not in seen[0] and seen[0]["fields"] == {"NAME": "A"}


def test_a_batch_uses_its_own_connector_not_its_commands(sync):
    sync.bind_offline("ONCRMCONTACTADD")
    sync.bind_offline("ONCRMCONTACTADD", connector="sync")
    result = sync.ok("batch", {"auth_connector": "sync",
                               "cmd": {"a": "crm.contact.add?fields[NAME]=A&auth_connector=other"}})
    assert result["result"]["a"] == 1 and result["result_error"] == []
    assert ids(sync.rows()) == ["1"] and sync.rows(connector="sync") == []


def test_every_kind_of_event_is_queued(sync):
    sync.bind_offline("ONTASKADD", "ONCRMDYNAMICITEMADD", "ONCRMDEALADD", "ONCRMCONTACTUSERFIELDADD")
    assert sync.webhook("tasks.task.add", {"fields": {"TITLE": "T", "RESPONSIBLE_ID": 1}})[0] == 200
    assert sync.webhook("crm.item.add", {"entityTypeId": 128, "fields": {"title": "P"}})[0] == 200
    assert sync.webhook("crm.item.add", {"entityTypeId": 2, "fields": {"title": "D"}})[0] == 200
    assert sync.webhook("crm.contact.userfield.add", {"fields": {"FIELD_NAME": "X", "USER_TYPE_ID": "string"}})[0] == 200
    data = {r["EVENT_NAME"]: r["EVENT_DATA"] for r in sync.rows()}
    assert data["ONTASKADD"] == {"FIELDS_BEFORE": "undefined", "FIELDS_AFTER": {"ID": "1"},
                                 "IS_ACCESSIBLE_BEFORE": "N", "IS_ACCESSIBLE_AFTER": "undefined"}
    assert data["ONCRMDYNAMICITEMADD"] == {"FIELDS": {"ID": "1", "ENTITY_TYPE_ID": "128"}}
    assert data["ONCRMDEALADD"] == {"FIELDS": {"ID": "1"}}
    assert data["ONCRMCONTACTUSERFIELDADD"]["FIELDS"]["FIELD_NAME"] == "UF_CRM_X"


def test_nothing_is_queued_for_an_app_not_fully_installed_and_uninstalling_forgets_its_queues(app_server):
    page = AppServer(page="<html>Settings</html>")  # never calls installFinish
    try:
        portal = Portal()
        portal.install(page.url + "/install", event_handler=page.url + "/events")
        token = page.posts("/install")[0]["AUTH_ID"]
        assert portal.ok("event.bind", token, {"event": "ONCRMCONTACTADD", "event_type": "offline"}) is True
        portal.post_json("/_emulator/changes", {"entity": "contact", "add": 2})
        assert portal.ok("event.offline.list", token) == []
    finally:
        page.close()
    sync = Sync(app_server)
    sync.bind_offline("ONCRMCONTACTADD")
    sync.changed(entity="contact", add=2)
    assert sync.portal.stats()["offline_queued"] == 2
    assert sync.portal.uninstall()[0] == 200
    assert sync.portal.stats()["offline_queued"] == 0 and sync.emu.offline.queues == {}


# ---- ONOFFLINEEVENT -------------------------------------------------------------------------------------


def notifications(sync):
    assert sync.emu.wait_events(5)
    return sync.app_server.posts("/offline")


def test_onofflineevent_is_posted_with_a_refresh_token_and_no_data(sync):
    sync.bind_offline("ONCRMCONTACTADD")
    assert sync.ok("event.bind", {"event": "ONOFFLINEEVENT", "handler": sync.app_server.url + "/offline"}) is True
    sync.changed(entity="contact", add=3)  # one hit: one notification
    [event] = notifications(sync)
    assert list(event) == ["event", "event_handler_id", "ts", "auth[access_token]", "auth[expires]", "auth[expires_in]",
                           "auth[scope]", "auth[domain]", "auth[server_endpoint]", "auth[status]",
                           "auth[client_endpoint]", "auth[member_id]", "auth[user_id]", "auth[refresh_token]",
                           "auth[application_token]"]
    assert event["event"] == "ONOFFLINEEVENT" and event["event_handler_id"] == "2"
    assert sync.portal.ok("event.offline.list", event["auth[access_token]"])[0]["ID"] == "1"  # a working pair
    assert sync.portal.refresh(event["auth[refresh_token]"])[0] == 200
    # The application's own change is not queued on its connector: no notification either.
    sync.clock.advance(10)
    sync.ok("crm.contact.add", {"fields": {"NAME": "own"}})
    assert len(notifications(sync)) == 1
    assert sync.emu.offline.size() == 3


def test_min_timeout_spaces_the_notifications(sync):
    sync.bind_offline("ONCRMCONTACTADD")
    sync.ok("event.bind", {"event": "ONOFFLINEEVENT", "handler": sync.app_server.url + "/offline",
                           "options": {"minTimeout": 30}})
    sync.changed(entity="contact", add=1)
    sync.clock.advance(10)
    sync.changed(entity="contact", add=1)  # 10 s later: too soon
    assert len(notifications(sync)) == 1
    sync.clock.advance(20)
    sync.changed(entity="contact", add=1)  # 30 s after the first
    assert len(notifications(sync)) == 2


def test_min_timeout_defaults_to_1_second_and_0_allows_one_per_hit(sync):
    sync.bind_offline("ONCRMCONTACTADD")
    sync.ok("event.bind", {"event": "ONOFFLINEEVENT", "handler": sync.app_server.url + "/offline"})
    sync.changed(entity="contact", add=1)
    sync.changed(entity="contact", add=1)  # the same second
    assert len(notifications(sync)) == 1
    sync.clock.advance(1)
    sync.changed(entity="contact", add=1)
    assert len(notifications(sync)) == 2
    sync.ok("event.unbind", {"event": "ONOFFLINEEVENT", "handler": sync.app_server.url + "/offline"})
    sync.ok("event.bind", {"event": "ONOFFLINEEVENT", "handler": sync.app_server.url + "/offline",
                           "options": {"minTimeout": 0}})
    sync.changed(entity="contact", add=2)
    sync.changed(entity="contact", add=1)  # the same second, another hit
    sync.ok("batch", {"cmd": {"a": "profile"}})  # a hit without queued rows
    assert len(notifications(sync)) == 4


# ---- /_emulator/changes ---------------------------------------------------------------------------------


def test_changes_are_made_as_in_the_portal_with_every_event(app_server):
    sync = Sync(app_server, event_url=app_server.url + "/outbound")
    sync.emu.reset_counters()
    created = sync.emu.records["contact"]
    assert sync.changed(entity="contact", add=3, seed=5) == {"added": [1, 2, 3], "updated": [], "deleted": []}
    assert created[1]["NAME"] and created[1]["LAST_NAME"].startswith("Added ")
    sync.clock.advance(90)
    body = sync.changed(entity="contact", update=2, delete=[3], seed=5, fields={"POST": "Buyer"})
    assert len(set(body["updated"])) == 2 and set(body["updated"]) <= {1, 2, 3} and body["deleted"] == [3]
    for record_id in set(body["updated"]) - {3}:
        assert created[record_id]["POST"] == "Buyer"
        assert created[record_id]["DATE_MODIFY"] == "2026-11-27T11:01:30+03:00"
    assert 3 not in created
    assert sync.emu.wait_events(5)
    outbound = [(e["event"], e["data[FIELDS][ID]"]) for e in app_server.posts("/outbound")]
    assert outbound == [("ONCRMCONTACTADD", "1"), ("ONCRMCONTACTADD", "2"), ("ONCRMCONTACTADD", "3"),
                        *[("ONCRMCONTACTUPDATE", str(i)) for i in body["updated"]], ("ONCRMCONTACTDELETE", "3")]
    stats = sync.portal.stats()
    assert stats["requests"] == 0 and stats["portal_changes"] == 6  # no REST call, no bucket
    # Seeded picks repeat: the same seed on the same records picks the same ones.
    again = Sync(app_server)
    again.changed(entity="contact", add=3, seed=5)
    assert again.changed(entity="contact", update=2, delete=[3], seed=5)["updated"] == body["updated"]


@pytest.mark.parametrize("entity", ["deal", "lead", "company"])
def test_changes_to_other_entities(sync, entity):
    body = sync.changed(entity=entity, add=2, fields={"COMMENTS": "x"})
    assert body["added"] == [1, 2] and sync.emu.records[entity][1]["COMMENTS"] == "x"
    assert sync.changed(entity=entity, update=[1, 1], delete=1, seed=1)["updated"] == [1, 1]
    assert len(sync.emu.records[entity]) == 1


@pytest.mark.parametrize(("payload", "status", "error"), [
    ({}, 400, "INVALID_ENTITY"),
    ({"entity": "task"}, 400, "INVALID_ENTITY"),
    ({"entity": "contact", "add": -1}, 400, "INVALID_FIELD"),
    ({"entity": "contact", "add": True}, 400, "INVALID_FIELD"),
    ({"entity": "contact", "add": 10**6 + 1}, 400, "INVALID_FIELD"),
    ({"entity": "contact", "update": "3"}, 400, "INVALID_FIELD"),
    ({"entity": "contact", "update": [1, "2"]}, 400, "INVALID_FIELD"),
    ({"entity": "contact", "delete": [0]}, 400, "INVALID_FIELD"),
    ({"entity": "contact", "update": 5}, 409, "NOT_ENOUGH_RECORDS"),
    ({"entity": "contact", "update": [99]}, 404, "NOT_FOUND"),
    ({"entity": "contact", "delete": [1, 1]}, 400, "INVALID_FIELD"),
    ({"entity": "contact", "seed": "x"}, 400, "INVALID_FIELD"),
    ({"entity": "contact", "fields": ["x"]}, 400, "INVALID_FIELD"),
    ({"entity": "contact", "colour": "red"}, 400, "UNKNOWN_FIELD"),
])
def test_changes_refusals_change_nothing(sync, payload, status, error):
    sync.changed(entity="contact", add=2)
    got_status, body = sync.changes(**payload)
    assert (got_status, body["error"]) == (status, error) and body["error_description"]
    assert sorted(sync.emu.records["contact"]) == [1, 2]


def test_a_change_the_store_refuses_keeps_what_was_done(sync):
    status, body = sync.changes(entity="company", add=2, fields={"TITLE": ""})
    assert status == 400 and body["error"] == "CHANGE_REFUSED" and "Company name" in body["error_description"]
    assert (body["added"], body["updated"], body["deleted"]) == ([], [], [])
    response = sync.portal.client.get("/_emulator/changes", headers={"Host": HOST})
    assert response.status_code == 405 and response.json["error"] == "METHOD_NOT_ALLOWED"


# ---- /_emulator/events: losing push deliveries -----------------------------------------------------------


def test_dropped_pushes_are_logged_never_sent_and_the_offline_queue_still_fills(app_server):
    sync = Sync(app_server, event_url=app_server.url + "/outbound")
    sync.bind_offline("ONCRMCONTACTADD")
    sync.ok("event.bind", {"event": "ONCRMCONTACTADD", "handler": app_server.url + "/contact"})
    sync.ok("event.bind", {"event": "ONOFFLINEEVENT", "handler": app_server.url + "/offline"})
    assert sync.events({"drop": True}) == (200, {"drop_rate": 1.0, "events_dropped": 0, "events_sent": 1,
                                                 "offline_queued": 0, "offline_queues": []})
    sync.changed(entity="contact", add=2)
    assert sync.emu.wait_events(5)
    assert app_server.posts("/outbound") == app_server.posts("/contact") == app_server.posts("/offline") == []
    dropped = [e for e in sync.emu.events_sent if e.get("dropped")]
    assert [e["event"] for e in dropped] == ["ONCRMCONTACTADD"] * 4 + ["ONOFFLINEEVENT"]
    assert all(e["status"] is None and e["ok"] is False for e in dropped)
    status, state = sync.events()
    assert status == 200 and state["events_dropped"] == 5 and state["offline_queued"] == 2
    assert state["offline_queues"] == [{"app_id": 1, "connector_id": "", "rows": 2, "reserved": 0, "errors": 0}]
    assert sync.portal.stats()["events_dropped"] == 5
    assert sync.events({"drop": False})[1]["drop_rate"] == 0.0
    sync.clock.advance(2)
    sync.changed(entity="contact", add=1)
    assert sync.emu.wait_events(5)
    assert len(app_server.posts("/outbound")) == len(app_server.posts("/contact")) == 1
    assert len(app_server.posts("/offline")) == 1


def test_a_drop_rate_loses_a_seeded_share():
    def dropped(seed):
        emu = create_emulator(event_url="http://127.0.0.1:9/none", event_timeout=0.2, seed=seed, clock=FakeClock())
        client = Client(emu)
        assert client.post("/_emulator/events", json={"drop_rate": 0.5}).json["drop_rate"] == 0.5
        client.post("/_emulator/changes", json={"entity": "deal", "add": 40})
        return [e["payload"]["data[FIELDS][ID]"] for e in emu.events_sent if e.get("dropped")]

    first = dropped(3)
    assert 5 < len(first) < 35 and dropped(3) == first


@pytest.mark.parametrize("payload", [
    {"drop": 1}, {"drop": "yes"}, {"drop_rate": 2}, {"drop_rate": -0.1}, {"drop_rate": "0.5"},
    {"drop_rate": True}, {"drop": True, "drop_rate": 0.5}, {"other": 1}, ["drop"],
])
def test_events_refusals(sync, payload):
    status, body = sync.portal.post_json("/_emulator/events", payload)
    assert status == 400 and set(body) == {"error", "error_description"}
    assert sync.emu.event_drop_rate == 0.0


# ---- stats and many portals -------------------------------------------------------------------------------


def test_stats_and_portals_route_the_new_endpoints():
    portals = create_portals(2, app=APP, clock=FakeClock())
    client = Client(portals)
    response = client.post("/_emulator/changes?portal=2", json={"entity": "lead", "add": 2})
    assert response.status_code == 200 and response.json["added"] == [1, 2]
    assert len(portals.portal(2).records["lead"]) == 2 and len(portals.portal(1).records["lead"]) == 0
    response = client.post("/_emulator/events", json={"drop": True}, headers={"Host": "portal-1.bitrix24.test"})
    assert response.status_code == 200 and portals.portal(1).event_drop_rate == 1.0
    assert portals.portal(2).event_drop_rate == 0.0
    for path in ("/_emulator/changes", "/_emulator/events"):
        response = client.post(path, json={"entity": "lead", "add": 1})
        assert response.status_code == 400 and response.json["error"] == "PORTAL_REQUIRED"
    stats = client.get("/_emulator/stats").json
    assert stats["portal_changes"] == 2 and stats["offline_queued"] == 0 and stats["events_dropped"] == 0
    assert [p["offline_queues"] for p in stats["by_portal"]] == [[], []]


# ---- bad input over a token ------------------------------------------------------------------------------

HOSTILE_OFFLINE = [
    None, {"process_id": ["x"]}, {"process_id": {"a": 1}}, {"process_id": 10**400}, {"process_id": ""},
    {"clear": {"a": 1}, "limit": [1]}, {"limit": 10**400}, {"limit": 1e308}, {"error": ["x"], "clear": 0},
    {"filter": {"TIMESTAMP_X": "yesterday"}}, {"filter": {"TIMESTAMP_X": ["x"]}}, {"filter": {"ID": None}},
    {"filter": {"%EVENT_NAME": "deal", "@ID": 1, "": 1}}, {"filter": {"0": 1}}, {"filter": [1, 2]},
    {"order": {"ID": ["ASC"]}}, {"order": [["ID"]]}, {"order": {"0": {"a": 1}}}, {"start": "x"}, {"start": -1},
    {"start": 10**400}, {"process_id": "p", "id": [{"a": 1}]}, {"process_id": "p", "message_id": [["x"]]},
    {"process_id": "p", "message_id": {"a": "b" * 32}}, {"process_id": "p", "id": {"a": "1"}},
    {"process_id": "p", "message_id": ["x" * 32], "id": "y"}, {"auth_connector": ["x"], "filter": {">ID": "abc"}},
]


@pytest.mark.parametrize("method", ["event.offline.get", "event.offline.clear", "event.offline.error",
                                    "event.offline.list", "feature.get"])
def test_no_parameters_make_an_offline_method_answer_5xx(sync, method):
    sync.bind_offline("ONCRMCONTACTADD")
    sync.changed(entity="contact", add=3)
    sync.get(clear=0, limit=1)
    for payload in HOSTILE_OFFLINE:
        status, body = sync.call(method, payload)
        assert status < 500 and ("result" in body or "error" in body), (payload, status, body)
    form = sync.portal.client.post("/rest/" + method, headers={"Host": HOST}, content_type="application/x-www-form-urlencoded",
                                   data=f"auth={sync.token}&filter[>ID]=1&order[ID]=x&id[]=a&message_id[]=b&process_id[]=c")
    assert form.status_code < 500


# ---- the speed check (reported, not asserted) --------------------------------------------------------------


def test_speed_of_a_sync_round_on_a_100000_contact_portal(app_server, capsys):
    started = time.perf_counter()
    server = start_server(create_emulator(preload={"contact": 100_000}, app=APP, limits=False))
    preloaded = time.perf_counter() - started
    try:
        url = server.url
        requests.post(f"{url}/_emulator/install", json={"handler": app_server.url + "/cb", "ui": False}, timeout=10)
        token = app_server.posts("/cb")[-1]["auth[access_token]"]
        for name in ("ONCRMCONTACTUPDATE", "ONCRMCONTACTDELETE"):
            requests.post(f"{url}/rest/event.bind", json={"auth": token, "event": name, "event_type": "offline"},
                          timeout=5)
        tick = time.perf_counter()
        body = requests.post(f"{url}/_emulator/changes", json={"entity": "contact", "update": 1000, "delete": 100,
                                                               "seed": 15}, timeout=60).json()
        changed = time.perf_counter() - tick
        assert len(body["updated"]) == 1000 and len(body["deleted"]) == 100
        expected = len(set(body["updated"])) + len(body["deleted"])
        tick, calls, rows, names = time.perf_counter(), 0, 0, set()
        while True:
            result = requests.post(f"{url}/rest/event.offline.get", json={"auth": token, "limit": 1000},
                                   timeout=30).json()["result"]
            calls += 1
            rows += len(result["events"])
            names.update(e["EVENT_NAME"] for e in result["events"])
            if not result["events"]:
                break
        drained = time.perf_counter() - tick
        assert rows == expected and names == {"ONCRMCONTACTUPDATE", "ONCRMCONTACTDELETE"}
        with capsys.disabled():
            print(f"\n[offline speed] preload 100,000 contacts {preloaded:.2f} s; 1,000 updates + 100 deletes via "
                  f"/_emulator/changes {changed:.3f} s; drained {rows} rows in {calls} calls of limit=1000 "
                  f"{drained:.3f} s")
    finally:
        server.stop()
