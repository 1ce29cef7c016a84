"""Event bindings: what a webhook may do with event.* (nothing: 403 WRONG_AUTH_TYPE), the portal's
handler table (its outbound webhook, event.get's row shape) and delivery to every bound handler.

Sources: https://apidocs.bitrix24.com/api-reference/events/event-bind.html,
https://apidocs.bitrix24.com/api-reference/events/event-get.html,
https://apidocs.bitrix24.com/api-reference/events/event-unbind.html,
https://apidocs.bitrix24.com/api-reference/events/events.html,
https://apidocs.bitrix24.com/api-reference/events/offline-events.html ("works only in the context of
application authorization"); the portal's source modules/rest/lib/api/event.php (AuthTypeException,
403 WRONG_AUTH_TYPE "Current authorization type is denied for this method"; ArgumentNullException;
"Unable to set event handler"; the admin checks); b24pysdk tests/integration/scopes/event/ (oauth_only).
"""

from __future__ import annotations

import pytest
import requests

from bitrix24_emulator import create_emulator, eventsapi, start_server
from bitrix24_emulator.emulator import EVENT_NAMES
from bitrix24_emulator.errors import ApiError

from .conftest import make_api
from .test_http import Receiver

WRONG_AUTH_TYPE = {"error": "WRONG_AUTH_TYPE", "error_description": "Current authorization type is denied for this method"}


@pytest.mark.parametrize("method", sorted(eventsapi.METHODS))
def test_a_webhook_is_refused_every_event_method(api, method):
    status, body = api(method, {"event": "ONCRMLEADADD", "handler": "https://example.com/h"})
    assert (status, body) == (403, WRONG_AUTH_TYPE)
    assert api.emu.handlers.bindings() == []  # nothing was bound


def test_the_refusal_comes_from_inside_the_method_so_it_takes_a_place_in_the_bucket():
    api = make_api(burst=1, rate=0.0001)
    assert api("event.get")[0] == 403
    assert api("profile")[0] == 503


def test_event_methods_need_no_scope_and_are_refused_inside_a_batch_too():
    api = make_api(scopes="user")  # no crm: the refusal is still the auth type, not the scope
    assert api("event.bind", {"event": "ONCRMLEADADD", "handler": "https://example.com/h"}) == (403, WRONG_AUTH_TYPE)
    result = api.ok("batch", {"cmd": {"get": "event.get", "me": "profile"}})
    assert result["result_error"]["get"] == WRONG_AUTH_TYPE and result["result"]["me"]["ID"] == "1"


def test_event_url_is_bound_to_every_crm_event_in_event_gets_shape():
    api = make_api(event_url="https://hooks.example.com/b24")
    rows = api.emu.event_handlers()
    assert [r["event"] for r in rows] == EVENT_NAMES
    assert rows[0] == {"event": "ONCRMLEADADD", "handler": "https://hooks.example.com/b24", "auth_type": "0",
                       "offline": 0}
    assert [b.id for b in api.emu.handlers.bindings()] == list(range(1, 16))
    assert make_api().emu.event_handlers() == []  # no outbound webhook, nothing bound


def test_an_event_first_raised_by_another_family_is_bound_to_event_url_then_and_once():
    emu = create_emulator(event_url="http://127.0.0.1:9/none", event_timeout=0.2)
    context = {"host": "x.bitrix24.test", "scheme": "https"}
    with emu._lock:
        emu.emit("ONTASKADD", [("data[FIELDS_AFTER][ID]", "3")], context)
    assert emu.event_handlers()[-1] == {"event": "ONTASKADD", "handler": "http://127.0.0.1:9/none",
                                        "auth_type": "0", "offline": 0}
    assert emu.handlers.bindings()[-1].id == 16
    assert emu.unbind_event("ONTASKADD") == 1
    with emu._lock:
        emu.emit("ONTASKADD", [("data[FIELDS_AFTER][ID]", "4")], context)
    assert "ONTASKADD" not in [r["event"] for r in emu.event_handlers()]  # an unbound event stays unbound
    assert emu.wait_events(5)
    assert [e["event"] for e in emu.events_sent] == ["ONTASKADD"]


def test_each_bound_handler_gets_the_event_with_its_own_handler_id():
    first, second = Receiver(), Receiver()
    server = start_server(create_emulator(event_url=first.url, limits=False))
    try:
        emu = server.emulator
        extra = emu.bind_event("onCrmContactAdd", second.url)  # names are upper-cased, as on the portal
        assert extra == 16
        requests.post(server.base + "crm.contact.add", json={"fields": {"NAME": "A"}}, timeout=5)
        requests.post(server.base + "crm.contact.update", json={"id": 1, "fields": {"NAME": "B"}}, timeout=5)
        assert emu.wait_events(5)
        to_first = [dict(p) for _, p in first.received]
        to_second = [dict(p) for _, p in second.received]
        contact_add_id = str(EVENT_NAMES.index("ONCRMCONTACTADD") + 1)
        assert [(e["event"], e["event_handler_id"]) for e in to_first] == [
            ("ONCRMCONTACTADD", contact_add_id),
            ("ONCRMCONTACTUPDATE", str(EVENT_NAMES.index("ONCRMCONTACTUPDATE") + 1))]
        assert [(e["event"], e["event_handler_id"], e["data[FIELDS][ID]"]) for e in to_second] == [
            ("ONCRMCONTACTADD", "16", "1")]
        assert {e["url"] for e in emu.events_sent} == {first.url, second.url}
        assert all(e["ok"] and e["status"] == 200 for e in emu.events_sent)
        # Unbinding the outbound webhook from one event leaves the other handler and events alone.
        assert emu.unbind_event("ONCRMCONTACTADD", first.url) == 1
        requests.post(server.base + "crm.contact.add", json={"fields": {"NAME": "C"}}, timeout=5)
        requests.post(server.base + "crm.deal.add", json={"fields": {"TITLE": "D"}}, timeout=5)
        assert emu.wait_events(5)
        assert [dict(p)["event"] for _, p in first.received][2:] == ["ONCRMDEALADD"]
        assert [dict(p)["data[FIELDS][ID]"] for _, p in second.received] == ["1", "2"]
    finally:
        server.stop()
        first.close()
        second.close()


def test_without_event_url_only_bound_events_are_posted():
    receiver = Receiver()
    server = start_server(create_emulator(limits=False))
    try:
        assert server.emulator.bind_event("ONCRMDEALADD", receiver.url) == 1
        requests.post(server.base + "crm.contact.add", json={"fields": {"NAME": "A"}}, timeout=5)
        requests.post(server.base + "crm.deal.add", json={"fields": {"TITLE": "D"}}, timeout=5)
        assert server.emulator.wait_events(5)
        assert [(dict(p)["event"], dict(p)["event_handler_id"]) for _, p in receiver.received] == [
            ("ONCRMDEALADD", "1")]
    finally:
        server.stop()
        receiver.close()


def test_a_binding_outlives_reset():
    emu = create_emulator(event_url="https://hooks.example.com/b24")
    emu.bind_event("ONCRMLEADADD", "https://other.example.com/")
    emu.reset()
    assert len(emu.event_handlers()) == 16


# ---- the application side (OAuth), reached by the context the OAuth work will pass -----------------

def oauth(emu, method, params=None, **context):
    return eventsapi.call(method, params or {}, emu, {"auth_type": "oauth", "app_id": 7, **context})


def refusal(emu, method, params=None, **context):
    with pytest.raises(ApiError) as caught:
        oauth(emu, method, params, **context)
    return caught.value.status, caught.value.body()


def test_an_app_binds_lists_and_unbinds_its_own_handlers():
    emu = create_emulator(event_url="https://hooks.example.com/b24")  # the outbound webhook is not the app's
    assert oauth(emu, "event.bind", {"event": "oncrmleadadd", "handler": "https://app.example.com/h"}) is True
    assert oauth(emu, "event.bind", {"EVENT": "ONCRMLEADADD", "HANDLER": "https://app.example.com/h",
                                     "AUTH_TYPE": 15}) is True
    assert oauth(emu, "event.get") == [
        {"event": "ONCRMLEADADD", "handler": "https://app.example.com/h", "auth_type": "0", "offline": 0},
        {"event": "ONCRMLEADADD", "handler": "https://app.example.com/h", "auth_type": "15", "offline": 0}]
    assert oauth(emu, "event.get", app_id=8) == []
    assert refusal(emu, "event.bind", {"event": "ONCRMLEADADD", "handler": "https://app.example.com/h"}) == (
        400, {"error": "ERROR_CORE", "error_description": "Unable to set event handler: Handler already binded"})
    # auth_type=0 removes only the handler bound with an empty auth_type (event-unbind page)
    assert oauth(emu, "event.unbind", {"event": "ONCRMLEADADD", "handler": "https://app.example.com/h",
                                       "auth_type": 0}) == {"count": 1}
    assert oauth(emu, "event.unbind", {"event": "ONCRMLEADADD", "handler": "https://app.example.com/h"}) == {
        "count": 1}
    assert oauth(emu, "event.get") == [] and len(emu.event_handlers()) == 15


def test_bind_refusals_follow_the_source():
    emu = create_emulator(scopes="user")
    assert refusal(emu, "event.bind", {"handler": "https://a/"}) == (
        400, {"error": "ERROR_ARGUMENT", "error_description": "Argument 'EVENT' is null or empty", "argument": "EVENT"})
    assert refusal(emu, "event.bind", {"event": "ONUSERADD"})[1]["argument"] == "HANDLER"
    assert refusal(emu, "event.bind", {"event": "ONUSERADD", "handler": "https://a/", "event_type": "later"}) == (
        400, {"error": "ERROR_ARGUMENT", "error_description": "Value must be one of {online|offline}",
              "argument": "EVENT_TYPE"})
    # an event outside the app's scopes (crm) is not found, as an unknown one is
    for name in ("ONCRMLEADADD", "ONNOTHING"):
        assert refusal(emu, "event.bind", {"event": name, "handler": "https://a/"}) == (
            400, {"error": "ERROR_EVENT_NOT_FOUND", "error_description": "Event not found"})
    assert refusal(emu, "event.bind", {"event": "ONOFFLINEEVENT", "event_type": "offline"})[1]["error_description"] \
        == "Offline event cannot be registered for this event."
    assert refusal(emu, "event.bind", {"event": "ONUSERADD", "handler": "https://a/", "auth_type": 3},
                   admin=False, user_id=2) == (
        403, {"error": "ACCESS_DENIED",
              "error_description": "Access denied! Event binding with AUTH_TYPE requires administrator access rights"})
    assert refusal(emu, "event.bind", {"event": "ONUSERADD", "event_type": "offline"}, admin=False)[0] == 403
    assert emu.event_handlers() == []


def test_offline_bindings_are_listed_with_their_connector_and_the_queue_is_admin_only():
    emu = create_emulator()
    assert oauth(emu, "event.bind", {"event": "ONCRMDEALUPDATE", "event_type": "offline"},
                 auth_connector="sync") is True
    assert oauth(emu, "event.bind", {"event": "ONOFFLINEEVENT", "handler": "https://app.example.com/o",
                                     "options": {"minTimeout": "30"}}) is True
    assert oauth(emu, "event.get") == [
        {"event": "ONCRMDEALUPDATE", "connector_id": "sync", "offline": 1},
        {"event": "ONOFFLINEEVENT", "handler": "https://app.example.com/o", "auth_type": "0", "offline": 0}]
    assert emu.handlers.bindings()[1].options == {"minTimeout": 30}
    for method in ("event.offline.get", "event.offline.list", "event.offline.clear", "event.offline.error"):
        assert refusal(emu, method, admin=False) == (403, {"error": "ACCESS_DENIED", "error_description": "Access denied!"})
    assert oauth(emu, "event.unbind", {"event": "ONCRMDEALUPDATE", "event_type": "offline"},
                 auth_connector="other") == {"count": 0}
    assert oauth(emu, "event.unbind", {"event": "ONCRMDEALUPDATE", "event_type": "offline"},
                 auth_connector="sync") == {"count": 1}


def test_events_lists_what_the_scopes_allow():
    emu = create_emulator(scopes="crm")
    names = oauth(emu, "events")
    assert names[:5] == ["ONAPPUNINSTALL", "ONAPPINSTALL", "ONAPPUPDATE", "ONAPPTEST", "ONOFFLINEEVENT"]
    assert "ONCRMDEALADD" in names and "ONTASKADD" not in names
    assert "ONTASKADD" in oauth(emu, "events", {"FULL": True})
    assert oauth(emu, "events", {"scope": "task"}) == [*eventsapi.EVENT_SCOPES["basic"], "ONTASKADD", "ONTASKUPDATE",
                                                       "ONTASKDELETE", "ONTASKCOMMENTADD", "ONTASKCOMMENTUPDATE",
                                                       "ONTASKCOMMENTDELETE"]
    assert {"ONCRMCONTACTUSERFIELDADD", "ONCRMQUOTEADD", "ONCRMDEALMOVETOCATEGORY"} <= set(names)
    assert oauth(emu, "event.bind", {"event": "ONCRMCONTACTUSERFIELDADD", "handler": "https://a/"}) is True



def test_cli_bind_adds_an_outbound_webhook_handler():
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    receiver = Receiver()
    proc = subprocess.Popen([sys.executable, "-m", "bitrix24_emulator", "--port", "0", "--no-limits",
                             "--bind", f"ONCRMDEALADD={receiver.url}"], cwd=Path(__file__).resolve().parents[2],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        base = proc.stdout.readline().strip().split()[-1]
        requests.post(base + "crm.contact.add", json={"fields": {"NAME": "A"}}, timeout=5)
        requests.post(base + "crm.deal.add", json={"fields": {"TITLE": "D"}}, timeout=5)
        deadline = time.monotonic() + 30  # another process's thread posts it: seconds on a loaded machine
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)  # (an event for the contact, had it been bound, would have been posted before the deal's)
        assert [(dict(p)["event"], dict(p)["event_handler_id"]) for _, p in receiver.received] == [
            ("ONCRMDEALADD", "1")]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        receiver.close()
